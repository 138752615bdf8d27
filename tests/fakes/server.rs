//! What every fake server shares: its router served on 127.0.0.1 at a random port until the fake
//! is dropped.

/// A router being served; dropping it stops the server.
pub struct Served {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` on 127.0.0.1 (random port); `what` names the fake in a failure.
pub async fn serve(app: axum::Router, what: &str) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{what} address: {e}"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served {
        url: format!("http://{addr}"),
        task,
    }
}
