//! The backup scenario: the real `impl/backup` client and services as madsim nodes.

pub mod workload;
