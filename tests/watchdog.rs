//! The shutdown watchdog, black-box (being written).
