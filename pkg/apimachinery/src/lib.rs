//! API machinery (being written).
