//! The X → Y key-value migration, as real code.
