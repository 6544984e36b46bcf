//! Lethe's engine: everything with IO around the pure domain. The event log lives in
//! [`store`]; [`requests`] runs commands against it; [`http`] and [`cli`] are the two doors.

pub mod store;
