//! Legacy platform devices and buses.
