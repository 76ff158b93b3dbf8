//! The conformance suite of the file layer's contract
//! (`weir_log::storage`): every implementation runs the same checks.

use std::io;
use std::path::Path;

use weir_log::sim::{SimStorage, ENOSPC};
use weir_log::{StdStorage, Storage};

/// The behaviour the log relies on, for any [`Storage`].
fn check_contract(storage: &dyn Storage, dir: &Path) {
    storage.create_dir_all(dir).expect("create dir");
    let path = dir.join("a.log");
    assert_eq!(
        storage.open_read(&path).expect_err("missing").kind(),
        io::ErrorKind::NotFound
    );
    let file = storage.open(&path).expect("open creates");
    assert_eq!(file.len().expect("len"), 0);
    assert!(file.is_empty().expect("is_empty"));
    file.append(&[b"ab", b"", b"cd"]).expect("append");
    file.append(&[b"e", b"f", b"g", b"h", b"i", b"j"])
        .expect("append many parts");
    file.append(&[]).expect("append nothing");
    assert_eq!(file.len().expect("len"), 10);
    let mut buf = [0u8; 4];
    file.read_exact_at(&mut buf, 3).expect("read");
    assert_eq!(&buf, b"defg");
    let again = storage.open(&path).expect("open existing");
    again
        .append(&[b"k"])
        .expect("append through a second handle");
    let mut all = [0u8; 11];
    file.read_exact_at(&mut all, 0)
        .expect("a write is visible to every handle");
    assert_eq!(&all, b"abcdefghijk");
    assert_eq!(
        file.read_exact_at(&mut buf, 9)
            .expect_err("past the end")
            .kind(),
        io::ErrorKind::UnexpectedEof
    );
    file.set_len(5).expect("cut");
    assert_eq!(storage.read(&path).expect("read whole"), b"abcde");
    file.append(&[b"X"])
        .expect("append after a cut lands at the new end");
    assert_eq!(storage.read(&path).expect("read whole"), b"abcdeX");
    file.sync_data().expect("sync data");
    file.sync_all().expect("sync all");

    let other = dir.join("b.tmp");
    let created = storage.create(&other).expect("create");
    created.append(&[b"new"]).expect("append");
    let replaced = storage.create(&other).expect("create replaces");
    assert_eq!(replaced.len().expect("len"), 0);
    replaced.append(&[b"fresh"]).expect("append");
    storage.rename(&other, &path).expect("rename over");
    assert_eq!(storage.read(&path).expect("read"), b"fresh");
    let listed = storage.read_dir(dir).expect("read dir");
    assert_eq!(listed, vec![path.clone()], "the renamed file is gone");
    storage.sync_dir(dir).expect("sync dir");
    storage.remove(&path).expect("remove");
    assert_eq!(
        storage.remove(&path).expect_err("gone").kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        storage.read(&path).expect_err("gone").kind(),
        io::ErrorKind::NotFound
    );
    storage.remove_dir_all(dir).expect("remove dir");
}

#[test]
fn the_real_disk_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_contract(&StdStorage, &dir.path().join("p"));
}

#[test]
fn the_simulated_disk_keeps_the_contract() {
    check_contract(&SimStorage::new(1), Path::new("/sim/p"));
}

#[test]
fn the_simulated_disk_fails_writes_and_loses_unsynced_data() {
    let sim = SimStorage::new(3);
    let dir = Path::new("/sim/q");
    sim.create_dir_all(dir).expect("dir");
    let path = dir.join("x.log");
    let file = sim.open(&path).expect("open");
    file.append(&[b"durable"]).expect("append");
    file.sync_data().expect("sync");
    sim.sync_dir(dir).expect("sync dir");
    sim.set_write_fault(Some(ENOSPC));
    let error = file.append(&[b"lost"]).expect_err("full");
    assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    sim.set_write_fault(None);
    file.set_len(7).expect("undo");
    file.append(&[b" and not"]).expect("append");
    sim.power_cut();
    assert!(file.len().is_err(), "handles die with the power");
    let bytes = sim.read(&path).expect("the synced file survives");
    assert!(bytes.starts_with(b"durable"), "{bytes:?}");
    assert!(
        b"durable and not".starts_with(&bytes),
        "a torn prefix at most: {bytes:?}"
    );
    // A file whose creation was never synced in its directory may vanish.
    let lost = dir.join("y.log");
    sim.open(&lost)
        .expect("open")
        .sync_data()
        .expect("sync its data, not its name");
    let mut vanished = false;
    for seed in 0..20 {
        let sim = SimStorage::new(seed);
        sim.create_dir_all(dir).expect("dir");
        sim.open(&lost).expect("open").sync_data().expect("sync");
        sim.power_cut();
        vanished |= sim.read(&lost).is_err();
    }
    assert!(vanished, "an unsynced create survived every power cut");
}
