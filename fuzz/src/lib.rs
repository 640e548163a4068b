//! Fuzz harnesses for Tether, one module per target (see `fuzz/README.md`). They
//! live here rather than in the targets so the normal test suite can replay every
//! corpus seed and every crash ever found through exactly the same code.

pub mod connection;
pub mod dialects;
