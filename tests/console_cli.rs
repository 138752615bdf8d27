//! `iocsync console hash-password`: a password piped in gives an argon2id PHC string that verifies
//! it, and an empty one is refused.

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use std::io::Write;
use std::process::{Command, Stdio};

fn hash_password(input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iocsync"))
        .args(["console", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start iocsync");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("iocsync output")
}

#[test]
fn a_piped_password_gives_a_phc_string_that_verifies_it() {
    let out = hash_password("correct horse battery staple\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).expect("utf-8");
    let phc = phc.trim();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let parsed = PasswordHash::new(phc).expect("a PHC string");
    Argon2::default()
        .verify_password(b"correct horse battery staple", &parsed)
        .expect("verifies the password it was made from");
    assert!(Argon2::default()
        .verify_password(b"correct horse battery stapler", &parsed)
        .is_err());
}

#[test]
fn an_empty_password_is_refused() {
    let out = hash_password("\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty password"));
}
