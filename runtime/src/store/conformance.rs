//! The conformance suite every [`Persistence`] engine must pass: one set of
//! checks, so another engine can be added without writing new tests.

use livebase_schema::{obj, DocumentId, Timestamp, Value};

use super::{Document, Order, Persistence};

fn doc(table: &str, n: f64) -> Document {
    let Value::Object(fields) = obj!("n" => n) else {
        unreachable!()
    };
    Document {
        id: DocumentId::generate(table),
        creation_time: n,
        fields,
    }
}

/// Runs every check against a fresh, empty store.
pub fn run(p: &dyn Persistence) {
    let mut w = p.connect().unwrap();
    let mut r = p.connect().unwrap();

    // Empty store: ts zero, nothing to read.
    assert_eq!(w.begin_write().unwrap(), Timestamp::ZERO);
    let a = doc("t", 1.0);
    let b = doc("t", 2.0);
    w.put_document(&a).unwrap();
    w.put_document(&b).unwrap();
    w.put_index_entry(b"k1", &a.id).unwrap();
    w.put_index_entry(b"k2", &b.id).unwrap();
    // A reader does not see an uncommitted write.
    assert_eq!(r.begin_read().unwrap(), Timestamp::ZERO);
    assert_eq!(r.get(&a.id).unwrap(), None);
    r.end_read().unwrap();
    // The writer sees its own writes.
    assert_eq!(w.get(&a.id).unwrap(), Some(a.clone()));
    w.commit(Timestamp::new(10)).unwrap();

    // A snapshot taken now keeps seeing ts 10 while a later commit lands.
    assert_eq!(r.begin_read().unwrap(), Timestamp::new(10));
    assert_eq!(r.get(&b.id).unwrap(), Some(b.clone()));
    assert_eq!(w.begin_write().unwrap(), Timestamp::new(10));
    w.delete_document(&b.id).unwrap();
    w.delete_index_entry(b"k2").unwrap();
    w.commit(Timestamp::new(11)).unwrap();
    assert_eq!(
        r.get(&b.id).unwrap(),
        Some(b.clone()),
        "snapshot must not move"
    );
    let keys: Vec<_> = r
        .scan(b"k", b"l", Order::Asc, 10)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
    r.end_read().unwrap();
    assert_eq!(r.begin_read().unwrap(), Timestamp::new(11));
    assert_eq!(r.get(&b.id).unwrap(), None);
    r.end_read().unwrap();

    // Scans: bounds are [start, end), order and limit are honoured.
    w.begin_write().unwrap();
    let docs: Vec<_> = (0..5).map(|i| doc("u", f64::from(i))).collect();
    for (i, d) in docs.iter().enumerate() {
        w.put_document(d).unwrap();
        w.put_index_entry(&[b'u', i as u8], &d.id).unwrap();
    }
    w.commit(Timestamp::new(12)).unwrap();
    r.begin_read().unwrap();
    let got = r.scan(&[b'u', 1], &[b'u', 4], Order::Asc, 10).unwrap();
    assert_eq!(
        got.iter().map(|(_, d)| d.creation_time).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0]
    );
    let got = r.scan(&[b'u', 0], b"v", Order::Desc, 2).unwrap();
    assert_eq!(
        got.iter().map(|(_, d)| d.creation_time).collect::<Vec<_>>(),
        [4.0, 3.0]
    );
    r.end_read().unwrap();

    // Rollback discards; so does dropping a connection mid-transaction.
    w.begin_write().unwrap();
    let c = doc("t", 3.0);
    w.put_document(&c).unwrap();
    w.rollback().unwrap();
    w.begin_write().unwrap();
    w.put_document(&c).unwrap();
    drop(w);
    let mut w = p.connect().unwrap();
    assert_eq!(w.begin_write().unwrap(), Timestamp::new(12));
    assert_eq!(w.get(&c.id).unwrap(), None);
    w.rollback().unwrap();
}
