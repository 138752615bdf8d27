//! The command-line front-ends: what each `iocsync` subcommand prints and asks, kept in the library
//! so tests reach it; `main.rs` only parses arguments, sets up logging and maps errors to exit codes.
//! The daemon itself (`run`) and `check` live in [`crate::app`].

pub mod explain;
pub mod misp;
pub mod parse;
pub mod reconcile;
pub mod runs;
pub mod s1;
pub mod state;
