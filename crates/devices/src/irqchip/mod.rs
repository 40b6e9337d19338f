//! User-space interrupt controllers and timers for the software engine.
