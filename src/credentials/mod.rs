//! Local credentials: password hashing and policy, TOTP second factor,
//! recovery codes, and the lockout arithmetic shared by all of them.

pub mod lockout;
pub mod password;
pub mod recovery;
pub mod totp;
