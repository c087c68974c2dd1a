//! Go runtime probe points (filled in with the Go support).
