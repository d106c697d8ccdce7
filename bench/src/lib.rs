//! Shared helpers for the macro benchmark tools.
