//! Worker client and fleet (being written).
