//! Tether's load generator: the scenarios of `BENCHMARKS.md`, run the same way against
//! Tether and against its peer servers (`bench/peers/`), so that results from one run
//! on one noisy machine can be compared as ratios.
//!
//! Every scenario talks only to loopback addresses, is bounded both in how much it
//! sends and in how long it may take, and ends with one JSON object describing what it
//! measured. `bench/run.sh` drives the scenarios and [`report`] turns a directory of
//! results into the Tether / peer / ratio table.
//!
//! The client shares the machine with the server, so it is written to be cheap per
//! received frame: pushes are recognised by scanning for two numeric fields the
//! writer put in the record's data ([`proto::find_u64`]) rather than by parsing JSON.

pub mod durable;
pub mod fanout;
pub mod idle;
pub mod net;
pub mod procfs;
pub mod proto;
pub mod report;
pub mod reqresp;
pub mod stats;

/// The result of a scenario (or an error saying why it could not run).
pub type Outcome = Result<serde_json::Value, String>;
