//! racefree-lock: a crash-safe, symlink-safe cross-process lock.
