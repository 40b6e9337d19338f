//! The VMM: turns a [`config::VmConfig`] into a running VM and waits for it to end.
//!
//! Pieces, one module each: configuration and validation ([`config`]), the console backend
//! ([`console`], [`terminal`]), vCPU threads ([`vcpu`]), the stop decision ([`outcome`]) and
//! the statistics table ([`stats`]).

pub mod config;
pub mod console;
pub mod outcome;
pub mod stats;
pub mod terminal;
pub mod vcpu;
