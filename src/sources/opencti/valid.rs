//! The OpenCTI sections as [`Section`]s: what a valid `opencti` and `connector` section establish
//! for [`OpenCtiSource::new`](super::OpenCtiSource::new), which then needs no checks of its own.

use super::config::{ConnectorConfig, OpenCtiConfig, RecoverSetting};
use crate::config::Section;
use crate::secret::Secret;

/// What a valid `opencti` section establishes.
#[derive(Debug, Clone)]
pub struct OpenCtiFacts {
    /// The platform base URL, an http(s) URL without a query.
    pub url: String,
    /// The API token, not blank nor the `ChangeMe` placeholder.
    pub token: Secret,
}

impl Section for OpenCtiConfig {
    type Facts = OpenCtiFacts;

    fn check(&self) -> Result<OpenCtiFacts, Vec<(String, String)>> {
        let problems = self.validate();
        match (&self.url, &self.token) {
            (Some(url), Some(token)) if problems.is_empty() => Ok(OpenCtiFacts {
                url: url.clone(),
                token: token.clone(),
            }),
            _ => Err(problems),
        }
    }
}

/// What a valid `connector` section establishes.
#[derive(Debug, Clone)]
pub struct ConnectorFacts {
    /// The connector's UUID, trimmed.
    pub connector_id: String,
    /// The live stream's id, trimmed.
    pub stream_id: String,
    /// What the first run replays.
    pub recover: RecoverSetting,
    /// The first run's start id `<ms>-0`, when a start timestamp is set.
    pub start_id: Option<String>,
}

impl Section for ConnectorConfig {
    type Facts = ConnectorFacts;

    fn check(&self) -> Result<ConnectorFacts, Vec<(String, String)>> {
        let problems = self.validate();
        let trimmed = |v: &Option<String>| v.as_deref().map(str::trim).map(str::to_string);
        match (trimmed(&self.id), trimmed(&self.live_stream_id)) {
            (Some(connector_id), Some(stream_id)) if problems.is_empty() => Ok(ConnectorFacts {
                connector_id,
                stream_id,
                recover: self.recover_setting(),
                start_id: self.start_id(),
            }),
            _ => Err(problems),
        }
    }
}
