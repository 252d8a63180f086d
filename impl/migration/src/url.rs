//! Store URLs for the command line: `sqlite://PATH`, `redb://PATH` and `memory:`.
//!
//! `sqlite:///tmp/x.db` names the absolute path `/tmp/x.db`; `sqlite://x.db` a path
//! relative to the working directory.

use std::path::PathBuf;

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Redb(PathBuf),
    Memory,
}

/// The forms [`StoreUrl::parse`] accepts, for error messages and help text.
pub const ACCEPTED_FORMS: &str = concat!(
    "sqlite:///absolute/path.db, sqlite://relative/path.db, ",
    "redb:///absolute/path.redb, redb://relative/path.redb, memory:"
);

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("store URL {url:?}: unknown scheme {scheme:?}; accepted forms: {ACCEPTED_FORMS}")]
    UnknownScheme { url: String, scheme: String },
    #[error("store URL {url:?}: expected SCHEME://PATH; accepted forms: {ACCEPTED_FORMS}")]
    Malformed { url: String },
    #[error("store URL {url:?}: the path is empty; accepted forms: {ACCEPTED_FORMS}")]
    EmptyPath { url: String },
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, UrlError> {
        if url == "memory:" || url == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        let Some((scheme, path)) = url.split_once("://") else {
            return Err(UrlError::Malformed {
                url: url.to_string(),
            });
        };
        if path.is_empty() {
            return Err(UrlError::EmptyPath {
                url: url.to_string(),
            });
        }
        match scheme {
            "sqlite" => Ok(StoreUrl::Sqlite(PathBuf::from(path))),
            "redb" => Ok(StoreUrl::Redb(PathBuf::from(path))),
            _ => Err(UrlError::UnknownScheme {
                url: url.to_string(),
                scheme: scheme.to_string(),
            }),
        }
    }

    /// The database file, if the store has one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            StoreUrl::Sqlite(path) | StoreUrl::Redb(path) => Some(path),
            StoreUrl::Memory => None,
        }
    }

    /// Opens the store the URL names.
    pub fn open(&self) -> Result<Box<dyn crate::store::Store>, crate::store::StoreError> {
        Ok(match self {
            StoreUrl::Sqlite(path) => Box::new(crate::store::sqlite::SqliteStore::open(path)?),
            StoreUrl::Redb(path) => Box::new(crate::store::redb_store::RedbStore::open(path)?),
            StoreUrl::Memory => Box::new(crate::store::memory::MemStore::new()),
        })
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(formatter, "sqlite://{}", path.display()),
            StoreUrl::Redb(path) => write!(formatter, "redb://{}", path.display()),
            StoreUrl::Memory => write!(formatter, "memory:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accepted_forms_and_explains_the_rest() {
        let sqlite = StoreUrl::parse("sqlite:///tmp/x.db").unwrap();
        assert_eq!(sqlite, StoreUrl::Sqlite("/tmp/x.db".into()));
        assert_eq!(
            StoreUrl::parse("redb://y.redb").unwrap(),
            StoreUrl::Redb("y.redb".into())
        );
        assert_eq!(StoreUrl::parse("memory:").unwrap(), StoreUrl::Memory);
        for bad in ["postgres://h/db", "sqlite:/x.db", "/tmp/x.db", "redb://"] {
            let message = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(
                message.contains("sqlite:///absolute/path.db"),
                "{bad}: {message}"
            );
        }
    }
}
