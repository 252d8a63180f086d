//! A checker of client histories against the authority's order of writes.
//!
//! The property: **a client never reads a value older than one it already knows** — one it
//! wrote and had acknowledged, or one it read before. "Older" is the authority's order: the
//! order in which the store that assigns versions (X, then Y once X is retired) applied
//! the writes of a key. Every write carries a unique tag (puts write their tag as the
//! value), so a read's value names exactly one write and its place in that order.
//!
//! This is session consistency (read-your-writes plus monotonic reads) per key, checked in
//! one pass: linear in the history, unlike a general linearizability search, and enough to
//! catch a migration that switches reads to a Y holding stale entries. It does not order
//! different clients' operations against each other in real time.

use std::collections::BTreeMap;

/// One write as the authority applied it, in the authority's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityWrite {
    pub key: String,
    /// Unique per write; for a put it is also the value written.
    pub tag: String,
    /// False for a delete.
    pub live: bool,
}

/// What a client saw, in the client's own order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// A write the client had acknowledged.
    Wrote {
        client: usize,
        key: String,
        tag: String,
        live: bool,
    },
    /// A read and the value it returned (`None`: absent or deleted).
    Read {
        client: usize,
        key: String,
        value: Option<String>,
    },
}

/// The authority's order of one key: where each tag stands, and where deletes stand.
#[derive(Debug, Default)]
struct KeyOrder {
    position_of_tag: BTreeMap<String, usize>,
    delete_positions: Vec<usize>,
    length: usize,
}

fn orders_of(authority: &[AuthorityWrite]) -> BTreeMap<&str, KeyOrder> {
    let mut orders: BTreeMap<&str, KeyOrder> = BTreeMap::new();
    for write in authority {
        let order = orders.entry(write.key.as_str()).or_default();
        let position = order.length;
        order.length += 1;
        // A retried write applied twice keeps its first place.
        order
            .position_of_tag
            .entry(write.tag.clone())
            .or_insert(position);
        if !write.live {
            order.delete_positions.push(position);
        }
    }
    orders
}

/// Checks every client's reads; returns one sentence per violation, empty when it holds.
pub fn check_session_order(authority: &[AuthorityWrite], ops: &[ClientOp]) -> Vec<String> {
    let orders = orders_of(authority);
    let empty = KeyOrder::default();
    // (client, key) -> (position known, the tag known there)
    let mut known: BTreeMap<(usize, &str), (usize, &str)> = BTreeMap::new();
    let mut violations = Vec::new();
    for op in ops {
        match op {
            ClientOp::Wrote {
                client, key, tag, ..
            } => {
                let order = orders.get(key.as_str()).unwrap_or(&empty);
                let Some(&position) = order.position_of_tag.get(tag) else {
                    violations.push(format!(
                        "client {client} had write {tag} on key {key} acknowledged, but the \
                         authority never applied it"
                    ));
                    continue;
                };
                raise(
                    &mut known,
                    (*client, key.as_str()),
                    (position, tag.as_str()),
                );
            }
            ClientOp::Read { client, key, value } => {
                let order = orders.get(key.as_str()).unwrap_or(&empty);
                let floor = known.get(&(*client, key.as_str())).copied();
                match check_read(order, floor, value.as_deref()) {
                    Ok(Some(position)) => {
                        let tag = value.as_deref().expect("a positioned read has a value");
                        raise(&mut known, (*client, key.as_str()), (position, tag));
                    }
                    Ok(None) => {}
                    Err(problem) => {
                        violations.push(format!("client {client} read key {key}: {problem}"))
                    }
                }
            }
        }
    }
    violations
}

fn raise<'a>(
    known: &mut BTreeMap<(usize, &'a str), (usize, &'a str)>,
    at: (usize, &'a str),
    seen: (usize, &'a str),
) {
    let slot = known.entry(at).or_insert(seen);
    if seen.0 >= slot.0 {
        *slot = seen;
    }
}

/// The read's place in the order (for a value), or why it is stale or impossible.
fn check_read(
    order: &KeyOrder,
    floor: Option<(usize, &str)>,
    value: Option<&str>,
) -> Result<Option<usize>, String> {
    let Some(value) = value else {
        // Absent is fine if nothing is known yet or a delete stands at or after what is.
        let fine = floor.is_none_or(|(position, _)| {
            order
                .delete_positions
                .iter()
                .any(|&delete| delete >= position)
        });
        return if fine {
            Ok(None)
        } else {
            let (_, tag) = floor.expect("checked above");
            Err(format!(
                "found it absent, but it already knew {tag} and no later delete exists (stale read)"
            ))
        };
    };
    let Some(&position) = order.position_of_tag.get(value) else {
        return Err(format!("found {value}, which no write ever wrote"));
    };
    match floor {
        Some((known_position, tag)) if position < known_position => Err(format!(
            "found {value} (write #{position}) after it already knew {tag} (write \
             #{known_position}) (stale read)"
        )),
        _ => Ok(Some(position)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, tag: &str) -> AuthorityWrite {
        AuthorityWrite {
            key: key.into(),
            tag: tag.into(),
            live: true,
        }
    }

    fn delete(key: &str, tag: &str) -> AuthorityWrite {
        AuthorityWrite {
            live: false,
            ..put(key, tag)
        }
    }

    fn wrote(client: usize, key: &str, tag: &str) -> ClientOp {
        ClientOp::Wrote {
            client,
            key: key.into(),
            tag: tag.into(),
            live: true,
        }
    }

    fn read(client: usize, key: &str, value: Option<&str>) -> ClientOp {
        ClientOp::Read {
            client,
            key: key.into(),
            value: value.map(String::from),
        }
    }

    fn authority() -> Vec<AuthorityWrite> {
        vec![
            put("k", "init"),
            put("k", "a1"),
            put("k", "b1"),
            delete("k", "a2"),
            put("j", "init"),
        ]
    }

    #[test]
    fn accepts_reads_that_only_move_forward() {
        let ops = vec![
            read(0, "k", Some("init")),
            wrote(0, "k", "a1"),
            read(0, "k", Some("a1")),
            // Another client's later write is newer: fine.
            read(0, "k", Some("b1")),
            read(0, "k", None),
            wrote(1, "k", "b1"),
            read(1, "k", None),
            read(1, "j", Some("init")),
        ];
        assert_eq!(
            check_session_order(&authority(), &ops),
            Vec::<String>::new()
        );
    }

    #[test]
    fn rejects_a_read_older_than_the_clients_own_acknowledged_write() {
        let ops = vec![wrote(0, "k", "b1"), read(0, "k", Some("a1"))];
        let found = check_session_order(&authority(), &ops);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("stale read") && found[0].contains("knew b1"));
    }

    #[test]
    fn rejects_going_back_after_a_read_and_absent_without_a_later_delete() {
        let ops = vec![
            read(2, "k", Some("b1")),
            read(2, "k", Some("init")),
            read(3, "j", Some("init")),
            read(3, "j", None),
        ];
        let found = check_session_order(&authority(), &ops);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|problem| problem.contains("stale read")));
    }

    #[test]
    fn rejects_acknowledged_writes_the_authority_lost_and_values_never_written() {
        let ops = vec![wrote(0, "k", "ghost"), read(1, "k", Some("phantom"))];
        let found = check_session_order(&authority(), &ops);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("never applied"));
        assert!(found[1].contains("no write ever wrote"));
    }
}
