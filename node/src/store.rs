//! The content-addressed chunk store: chunks on disk under their blake3 name, a size cap, and
//! eviction of the least recently used chunks that no one has pinned. Every read is re-hashed, so
//! a chunk damaged on disk is dropped and reported missing rather than served.
//!
//! Objects are *held* by root: storing an object holds it (its chunks cannot be evicted), and
//! [`ChunkStore::release`] lets it go, deleting at once every chunk no other held object uses.
//! The owner of an object (the coordinator's round, a node's worker) releases it once the run no
//! longer needs it, so a run of thousands of rounds keeps only what is live on disk;
//! [`ChunkStore::collect`] deletes everything not held (after a restart, once the live objects
//! are held again).
//!
//! Layout: `<dir>/chunks/<first two hex digits>/<digest hex>`, written to a temporary file and
//! renamed into place, so a crash never leaves a partial chunk under a valid name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use canopy_protocol::codec::MAX_CHUNK_SIZE;
use canopy_protocol::{Digest, Manifest};

use crate::buffers::CHUNKS;
use crate::error::NodeError;

/// Statistics of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Chunks held.
    pub chunks: usize,
    /// Bytes held.
    pub bytes: u64,
    /// Bytes held by pinned chunks.
    pub pinned_bytes: u64,
    /// Objects held.
    pub objects: usize,
    /// The size cap.
    pub cap: u64,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    last_used: u64,
    pins: u32,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Digest, Entry>,
    /// Objects held, by root, with their chunks (each chunk pinned once per holding object).
    held: HashMap<Digest, Vec<Digest>>,
    bytes: u64,
    clock: u64,
}

impl Index {
    fn touch(&mut self, id: &Digest) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self.entries.get_mut(id) {
            e.last_used = clock;
        }
    }

    fn pinned_bytes(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| e.pins > 0)
            .map(|e| e.size)
            .sum()
    }
}

/// A chunk store on disk with a size cap.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    cap: u64,
    index: Mutex<Index>,
}

/// Where the store opened on `dir` keeps chunk `id` (for tools that copy a store, such as
/// a backup).
pub fn chunk_path(dir: &Path, id: &Digest) -> PathBuf {
    chunk_file(&dir.join("chunks"), id)
}

fn chunk_file(root: &Path, id: &Digest) -> PathBuf {
    let hex = id.to_string();
    root.join(&hex[..2]).join(hex)
}

impl ChunkStore {
    /// Opens (creating if needed) the store in `dir`, indexing the chunks already there.
    pub fn open(dir: &Path, cap: u64) -> Result<Self, NodeError> {
        let root = dir.join("chunks");
        std::fs::create_dir_all(&root).map_err(|source| io(&root, source))?;
        // Every shard directory now, rather than one the first time a chunk lands in it,
        // which a new node's first fetch did for most of its chunks.
        for shard in 0..=u8::MAX {
            let path = root.join(format!("{shard:02x}"));
            match std::fs::create_dir(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(io(&path, e));
                }
                _ => {}
            }
        }
        let mut index = Index::default();
        for shard in std::fs::read_dir(&root).map_err(|source| io(&root, source))? {
            let shard = shard.map_err(|source| io(&root, source))?.path();
            if !shard.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&shard).map_err(|source| io(&shard, source))? {
                let file = file.map_err(|source| io(&shard, source))?;
                let path = file.path();
                let name = file.file_name();
                let Some(id) = name.to_str().and_then(|n| n.parse::<Digest>().ok()) else {
                    // Leftover temporary files from an interrupted write.
                    let _ = std::fs::remove_file(&path);
                    continue;
                };
                let size = file.metadata().map_err(|source| io(&path, source))?.len();
                index.clock += 1;
                index.bytes += size;
                index.entries.insert(
                    id,
                    Entry {
                        size,
                        last_used: index.clock,
                        pins: 0,
                    },
                );
            }
        }
        Ok(Self {
            dir: root,
            cap,
            index: Mutex::new(index),
        })
    }

    fn path(&self, id: &Digest) -> PathBuf {
        chunk_file(&self.dir, id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `data` under its blake3 name and returns the name.
    pub fn put(&self, data: &[u8]) -> Result<Digest, NodeError> {
        let id = Digest::of(data);
        self.put_checked(&id, data)?;
        Ok(id)
    }

    /// Stores `data` under `id`, refusing it unless its blake3 is `id`.
    pub fn put_verified(&self, id: &Digest, data: &[u8]) -> Result<(), NodeError> {
        if Digest::of(data) != *id {
            return Err(NodeError::ChunkMismatch(*id));
        }
        self.put_checked(id, data)
    }

    fn put_checked(&self, id: &Digest, data: &[u8]) -> Result<(), NodeError> {
        self.put_named(id, data, Durability::Synced)
    }

    fn put_named(&self, id: &Digest, data: &[u8], sync: Durability) -> Result<(), NodeError> {
        let size = data.len() as u64;
        let victims = {
            let mut index = self.lock();
            if index.entries.contains_key(id) {
                index.touch(id);
                return Ok(());
            }
            let victims = Self::choose_victims(&index, size, self.cap)?;
            for v in &victims {
                if let Some(e) = index.entries.remove(v) {
                    index.bytes -= e.size;
                }
            }
            // Reserve the space now; the file follows.
            index.clock += 1;
            let clock = index.clock;
            index.bytes += size;
            index.entries.insert(
                *id,
                Entry {
                    size,
                    last_used: clock,
                    pins: 0,
                },
            );
            victims
        };
        for v in victims {
            let _ = std::fs::remove_file(self.path(&v));
        }
        let path = self.path(id);
        let result = write_atomically(&path, data, sync);
        if result.is_err() {
            let mut index = self.lock();
            if let Some(e) = index.entries.remove(id) {
                index.bytes -= e.size;
            }
        }
        result
    }

    /// The least recently used unpinned chunks to drop so that `size` more bytes fit.
    fn choose_victims(index: &Index, size: u64, cap: u64) -> Result<Vec<Digest>, NodeError> {
        if index.bytes + size <= cap {
            return Ok(Vec::new());
        }
        let mut unpinned: Vec<(&Digest, &Entry)> =
            index.entries.iter().filter(|(_, e)| e.pins == 0).collect();
        unpinned.sort_by_key(|(_, e)| e.last_used);
        let mut freed = 0;
        let mut victims = Vec::new();
        for (id, e) in unpinned {
            if index.bytes - freed + size <= cap {
                break;
            }
            freed += e.size;
            victims.push(*id);
        }
        if index.bytes - freed + size > cap {
            return Err(NodeError::StoreFull {
                needed: size,
                pinned: index.pinned_bytes(),
                cap,
            });
        }
        Ok(victims)
    }

    /// Whether the store holds `id`.
    pub fn contains(&self, id: &Digest) -> bool {
        self.lock().entries.contains_key(id)
    }

    /// Reads chunk `id`, re-hashing it; a chunk damaged on disk is dropped and reads as missing.
    pub fn get(&self, id: &Digest) -> Result<Option<Vec<u8>>, NodeError> {
        if !self.contains(id) {
            return Ok(None);
        }
        let path = self.path(id);
        let data = match read_file(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(id);
                return Ok(None);
            }
            Err(source) => return Err(io(&path, source)),
        };
        if Digest::of(&data) != *id {
            tracing::warn!(chunk = %id.fmt_short(), "chunk damaged on disk; dropped");
            self.forget(id);
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        self.lock().touch(id);
        Ok(Some(data))
    }

    fn forget(&self, id: &Digest) {
        let mut index = self.lock();
        if let Some(e) = index.entries.remove(id) {
            index.bytes -= e.size;
        }
    }

    /// Holds the object of `manifest` (idempotent): its chunks are pinned until
    /// [`ChunkStore::release`]. Returns false, holding nothing, unless every chunk is here.
    pub fn hold(&self, manifest: &Manifest) -> bool {
        let mut index = self.lock();
        if index.held.contains_key(&manifest.root) {
            return true;
        }
        if !manifest
            .chunks
            .iter()
            .all(|id| index.entries.contains_key(id))
        {
            return false;
        }
        for id in &manifest.chunks {
            if let Some(e) = index.entries.get_mut(id) {
                e.pins += 1;
            }
        }
        index.held.insert(manifest.root, manifest.chunks.clone());
        true
    }

    /// Whether the object `root` is held.
    pub fn holds(&self, root: &Digest) -> bool {
        self.lock().held.contains_key(root)
    }

    /// Lets the object `root` go: its chunks that no other held object uses are deleted now.
    /// Returns the bytes freed (0 when the object was not held).
    pub fn release(&self, root: &Digest) -> u64 {
        let doomed = {
            let mut index = self.lock();
            let Some(chunks) = index.held.remove(root) else {
                return 0;
            };
            let mut doomed = Vec::new();
            for id in chunks {
                if let Some(e) = index.entries.get_mut(&id) {
                    e.pins = e.pins.saturating_sub(1);
                    if e.pins == 0 {
                        doomed.push(id);
                    }
                }
            }
            doomed
        };
        self.delete(&doomed)
    }

    /// Deletes every chunk that no held object uses; returns the bytes freed.
    pub fn collect(&self) -> u64 {
        let doomed: Vec<Digest> = self
            .lock()
            .entries
            .iter()
            .filter(|(_, e)| e.pins == 0)
            .map(|(id, _)| *id)
            .collect();
        self.delete(&doomed)
    }

    /// Removes `ids` (unless pinned meanwhile) from the index and the disk.
    fn delete(&self, ids: &[Digest]) -> u64 {
        let mut freed = 0;
        let mut removed = Vec::with_capacity(ids.len());
        {
            let mut index = self.lock();
            for id in ids {
                if index.entries.get(id).is_some_and(|e| e.pins == 0)
                    && let Some(e) = index.entries.remove(id)
                {
                    index.bytes -= e.size;
                    freed += e.size;
                    removed.push(*id);
                }
            }
        }
        for id in removed {
            let _ = std::fs::remove_file(self.path(&id));
        }
        freed
    }

    /// Stores every chunk of an object and holds it (see [`ChunkStore::hold`]).
    pub fn put_object(&self, manifest: &Manifest, data: &[u8]) -> Result<(), NodeError> {
        self.put_object_as(manifest, data, true, Durability::Synced)
    }

    /// [`ChunkStore::put_object`] for an object whose chunks were each checked against the
    /// manifest as they arrived: they are not hashed again, and reach the disk with an
    /// `fsync` only when `sync` says so (a chunk a crash damaged fails its check when read,
    /// and is fetched again).
    pub fn put_fetched(
        &self,
        manifest: &Manifest,
        data: &[u8],
        sync: Durability,
    ) -> Result<(), NodeError> {
        self.put_object_as(manifest, data, false, sync)
    }

    /// Stores one chunk of an object being fetched, already checked against its manifest
    /// (not hashed again); see [`ChunkStore::put_fetched`].
    pub fn put_fetched_chunk(
        &self,
        id: &Digest,
        data: &[u8],
        sync: Durability,
    ) -> Result<(), NodeError> {
        self.put_named(id, data, sync)
    }

    fn put_object_as(
        &self,
        manifest: &Manifest,
        data: &[u8],
        check: bool,
        sync: Durability,
    ) -> Result<(), NodeError> {
        // Chunks already written for this object: pinned as they go, so that later chunks of
        // the same object cannot evict earlier ones, and unpinned once the object is held.
        let mut written: Vec<Digest> = Vec::with_capacity(manifest.chunks.len());
        let result = (|| {
            for (index, id) in manifest.chunks.iter().enumerate() {
                let start = index * manifest.chunk_size as usize;
                let chunk = data
                    .get(start..start + manifest.chunk_len(index)?)
                    .ok_or(NodeError::ChunkMismatch(*id))?;
                if check && Digest::of(chunk) != *id {
                    return Err(NodeError::ChunkMismatch(*id));
                }
                self.put_named(id, chunk, sync)?;
                if let Some(e) = self.lock().entries.get_mut(id) {
                    e.pins += 1;
                    written.push(*id);
                }
            }
            Ok(())
        })();
        if result.is_ok() {
            self.hold(manifest);
        }
        let mut index = self.lock();
        for id in &written {
            if let Some(e) = index.entries.get_mut(id) {
                e.pins = e.pins.saturating_sub(1);
            }
        }
        result
    }

    /// Whether every chunk of `manifest` is here.
    pub fn has_object(&self, manifest: &Manifest) -> bool {
        let index = self.lock();
        manifest
            .chunks
            .iter()
            .all(|id| index.entries.contains_key(id))
    }

    /// Rebuilds a whole object from its chunks, checking each and the root.
    pub fn get_object(&self, manifest: &Manifest) -> Result<Option<Vec<u8>>, NodeError> {
        let mut out = Vec::with_capacity(manifest.total_len as usize);
        for id in &manifest.chunks {
            match self.get(id)? {
                Some(chunk) => {
                    out.extend_from_slice(&chunk);
                    CHUNKS.give(chunk);
                }
                None => return Ok(None),
            }
        }
        if Digest::of(&out) != manifest.root {
            return Err(NodeError::Chunk(
                canopy_protocol::error::ChunkError::RootMismatch,
            ));
        }
        Ok(Some(out))
    }

    /// Current statistics.
    pub fn stats(&self) -> StoreStats {
        let index = self.lock();
        StoreStats {
            chunks: index.entries.len(),
            bytes: index.bytes,
            pinned_bytes: index.pinned_bytes(),
            objects: index.held.len(),
            cap: self.cap,
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> NodeError {
    NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a chunk's file into a reused buffer (served chunks hand theirs back once sent).
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let mut data = CHUNKS.take_empty(len.min(MAX_CHUNK_SIZE as usize));
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// Whether a write waits until its data is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` before the file is named: the coordinator acknowledges results only once
    /// they are on disk.
    Synced,
    /// Leave it to the page cache: for data that can be fetched again.
    Cached,
}

fn write_atomically(path: &Path, data: &[u8], sync: Durability) -> Result<(), NodeError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    // The shard directories are made when the store opens; one removed since is made again.
    let mut file = match std::fs::File::create(&tmp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(path);
            std::fs::create_dir_all(parent).map_err(|source| io(parent, source))?;
            std::fs::File::create(&tmp)
        }
        file => file,
    }
    .map_err(|source| io(&tmp, source))?;
    file.write_all(data).map_err(|source| io(&tmp, source))?;
    if sync == Durability::Synced {
        file.sync_all().map_err(|source| io(&tmp, source))?;
    }
    drop(file);
    std::fs::rename(&tmp, path).map_err(|source| io(path, source))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use canopy_protocol::ObjectKind;

    use super::*;

    /// Seeded bytes with no short period, so the chunks of one object differ.
    fn data(len: usize, seed: u8) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn put_get_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let a = store.put(&data(1000, 1)).unwrap();
        assert_eq!(store.get(&a).unwrap().unwrap(), data(1000, 1));
        assert!(store.put_verified(&a, &data(1000, 2)).is_err());
        assert_eq!(store.get(&Digest::of(b"nope")).unwrap(), None);
        drop(store);
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.stats().chunks, 1);
        assert_eq!(store.get(&a).unwrap().unwrap(), data(1000, 1));
    }

    #[test]
    fn evicts_least_recently_used_unpinned() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 3000).unwrap();
        let a = store.put(&data(1000, 1)).unwrap();
        let b = store.put(&data(1000, 2)).unwrap();
        let c = store.put(&data(1000, 3)).unwrap();
        store.get(&a).unwrap(); // a is now more recent than b
        let d = store.put(&data(1000, 4)).unwrap();
        assert!(store.contains(&a) && store.contains(&c) && store.contains(&d));
        assert!(!store.contains(&b), "b was least recently used");
        assert!(store.stats().bytes <= 3000);
    }

    #[test]
    fn pinned_objects_survive_and_full_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 4096).unwrap();
        let object = data(3000, 9);
        let m = Manifest::build(ObjectKind::ModelWeights, &object, 1024, BTreeMap::new()).unwrap();
        store.put_object(&m, &object).unwrap();
        assert!(store.has_object(&m));
        assert_eq!(store.stats().pinned_bytes, 3000);
        let err = store.put(&data(2000, 5)).unwrap_err();
        assert!(
            matches!(err, NodeError::StoreFull { needed: 2000, .. }),
            "{err}"
        );
        assert_eq!(store.get_object(&m).unwrap().unwrap(), object);
        assert_eq!(store.release(&m.root), 3000);
        store.put(&data(2000, 5)).unwrap();
        assert!(!store.has_object(&m));
    }

    /// Issue 17, "disks fill": every stored object used to stay pinned for the life of the
    /// process, so a run of many rounds filled the disk. A released object's chunks leave the
    /// disk at once, a chunk shared with a still-held object stays, and a store reopened after
    /// a restart collects what nothing holds again.
    #[test]
    fn released_objects_leave_the_disk_and_shared_chunks_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 30).unwrap();
        let shared_part = data(1024, 7);
        let mut first = shared_part.clone();
        first.extend(data(1024, 8));
        let mut second = shared_part.clone();
        second.extend(data(1024, 9));
        let m1 = Manifest::build(ObjectKind::Update, &first, 1024, BTreeMap::new()).unwrap();
        let m2 = Manifest::build(ObjectKind::Update, &second, 1024, BTreeMap::new()).unwrap();
        // Storing an object twice holds it once.
        store.put_object(&m1, &first).unwrap();
        store.put_object(&m1, &first).unwrap();
        store.put_object(&m2, &second).unwrap();
        assert_eq!(store.stats().objects, 2);
        assert_eq!(store.stats().bytes, 3 * 1024);
        assert_eq!(store.release(&m1.root), 1024, "only m1's own chunk goes");
        assert_eq!(store.release(&m1.root), 0, "released once");
        assert!(store.has_object(&m2));
        assert!(!store.path(&m1.chunks[1]).exists());
        assert_eq!(store.release(&m2.root), 2048);
        assert_eq!(store.stats().bytes, 0);
        assert_eq!(store.stats().chunks, 0);

        // Growth stays flat over many "rounds" of put, hold and release.
        for round in 0..200u8 {
            let object = data(4096, round);
            let m = Manifest::build(ObjectKind::Update, &object, 1024, BTreeMap::new()).unwrap();
            store.put_object(&m, &object).unwrap();
            assert!(store.stats().bytes <= 4096);
            store.release(&m.root);
        }
        assert_eq!(store.stats().bytes, 0);

        // After a restart nothing is held: what is held again stays, the rest is collected.
        store.put_object(&m1, &first).unwrap();
        store.put_object(&m2, &second).unwrap();
        drop(store);
        let store = ChunkStore::open(dir.path(), 1 << 30).unwrap();
        assert!(store.hold(&m2));
        assert_eq!(store.collect(), 1024);
        assert!(store.has_object(&m2) && !store.has_object(&m1));
        let absent =
            Manifest::build(ObjectKind::Update, &data(10, 1), 1024, BTreeMap::new()).unwrap();
        assert!(!store.hold(&absent), "an object not all here is not held");
    }

    #[test]
    fn damaged_chunk_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let a = store.put(&data(500, 1)).unwrap();
        std::fs::write(store.path(&a), b"garbage").unwrap();
        assert_eq!(store.get(&a).unwrap(), None);
        assert!(!store.contains(&a));
    }
}
