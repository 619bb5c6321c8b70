//! Store-and-forward buffer in SQLite (issue 3).
