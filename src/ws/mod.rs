//! WebSocket pieces that know nothing of tether's model: reading frame
//! boundaries and close codes in a byte stream (`frames`), and the flag a
//! tunnel polls to learn that it should close with a given code (`control`).

pub mod control;
pub mod frames;
