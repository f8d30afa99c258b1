//! sFlow version 5.
