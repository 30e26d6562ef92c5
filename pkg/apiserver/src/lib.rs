//! apiserver (being written).
