//! The guide: how to use the crate, chapter by chapter.
