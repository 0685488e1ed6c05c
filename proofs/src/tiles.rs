//! The log as C2SP `tlog-tiles` (<https://c2sp.org/tlog-tiles>), for monitors: static files
//! any HTTP server or CDN can serve, and that existing tile clients read.
//!
//! ```text
//! <prefix>/checkpoint                 the latest signed checkpoint (cosignatures included)
//! <prefix>/tile/<L>/<N>[.p/<W>]       hash tile: level L (0 to 5), index N, width W (1 to 255)
//! <prefix>/tile/entries/<N>[.p/<W>]   entry bundle: W entries, each a u16 length then the bytes
//! ```
//!
//! `N` is written in 3-digit path elements, all but the last prefixed with `x` (1234067 is
//! `x001/x234/067`). A tile of level `L` holds the hashes of the perfect subtrees of height `8·L`
//! at positions `256·N` to `256·N + W − 1`: level 0 holds leaf hashes, level 1 the roots of full
//! level-0 tiles, and so on. A full tile has 256 hashes and never changes; a partial one is the
//! right edge of a level at some tree size.

use crate::hash::{HASH_LEN, Hash};
use crate::merkle::{Frontier, Subtrees};
use crate::store::StoreError;

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// The height of a tile: level `L` hashes are subtrees of height `8·L`.
pub const TILE_HEIGHT: u32 = 8;
/// The highest level served.
pub const MAX_LEVEL: u8 = 5;

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// The checkpoint.
    Checkpoint,
    /// A hash tile.
    Tile {
        /// Its level.
        level: u8,
        /// Its index within the level.
        index: u64,
        /// Its width: 256 for a full tile.
        width: u16,
    },
    /// An entry bundle.
    Entries {
        /// Its index.
        index: u64,
        /// Its width: 256 for a full bundle.
        width: u16,
    },
}

impl Resource {
    /// Parse a path below the prefix (no leading `/`), in its one canonical spelling only.
    pub fn parse(path: &str) -> Option<Self> {
        if path == "checkpoint" {
            return Some(Self::Checkpoint);
        }
        let rest = path.strip_prefix("tile/")?;
        let (kind, rest) = rest.split_once('/')?;
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                let w: u16 = width.parse().ok()?;
                if !(1..=255).contains(&w) || w.to_string() != width {
                    return None;
                }
                (index, w)
            }
            None => (rest, 256),
        };
        let index = parse_index(index)?;
        if kind == "entries" {
            return Some(Self::Entries { index, width });
        }
        let level: u8 = kind.parse().ok()?;
        if level > MAX_LEVEL || level.to_string() != kind {
            return None;
        }
        Some(Self::Tile {
            level,
            index,
            width,
        })
    }

    /// Its path below the prefix.
    pub fn path(&self) -> String {
        let tail = |index: u64, width: u16| {
            if width == 256 {
                encode_index(index)
            } else {
                format!("{}.p/{width}", encode_index(index))
            }
        };
        match *self {
            Self::Checkpoint => "checkpoint".to_owned(),
            Self::Tile {
                level,
                index,
                width,
            } => format!("tile/{level}/{}", tail(index, width)),
            Self::Entries { index, width } => format!("tile/entries/{}", tail(index, width)),
        }
    }
}

/// `1234067` → `x001/x234/067`.
pub fn encode_index(index: u64) -> String {
    let mut groups = Vec::new();
    let mut n = index;
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i == last {
                format!("{g:03}")
            } else {
                format!("x{g:03}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn parse_index(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split('/').collect();
    let (last, leading) = parts.split_last()?;
    let mut n: u64 = 0;
    for (i, part) in leading
        .iter()
        .map(|p| p.strip_prefix('x'))
        .chain([Some(*last)])
        .enumerate()
    {
        let part = part?;
        if part.len() != 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // No leading zero groups: the first group of a multi-group index is not 000.
        if i == 0 && parts.len() > 1 && part == "000" {
            return None;
        }
        n = n.checked_mul(1000)?.checked_add(part.parse().ok()?)?;
    }
    Some(n)
}

/// How many hashes level `level` holds in a tree of `size` leaves.
pub fn level_width(size: u64, level: u8) -> u64 {
    size.checked_shr(TILE_HEIGHT * u32::from(level))
        .unwrap_or(0)
}

/// Whether `width` hashes (or entries) from tile `index` lie within `available`.
fn within(index: u64, width: u16, available: u64) -> bool {
    index
        .checked_mul(TILE_WIDTH)
        .and_then(|start| start.checked_add(u64::from(width)))
        .is_some_and(|end| end <= available)
}

/// Hash tile `(level, index, width)` of the tree of `size` leaves held by `source`; `None` when
/// the tree does not hold it.
pub fn read_tile<S: Subtrees + ?Sized>(
    source: &S,
    size: u64,
    level: u8,
    index: u64,
    width: u16,
) -> Result<Option<Vec<u8>>, S::Error> {
    if level > MAX_LEVEL || !within(index, width, level_width(size, level)) {
        return Ok(None);
    }
    let hashes = source.perfect_run(
        TILE_HEIGHT * u32::from(level),
        index * TILE_WIDTH,
        u64::from(width),
    )?;
    Ok(Some(hashes.iter().flat_map(|h| h.0).collect()))
}

/// Entry bundle `(index, width)` of a tree of `size` entries; `fetch(first, count)` reads the
/// entries. `None` when the tree does not hold it; an entry over 65 535 bytes (possible only in
/// logs written before that limit) cannot be bundled and is an error.
pub fn read_entries<E: From<StoreError>>(
    size: u64,
    index: u64,
    width: u16,
    fetch: impl FnOnce(u64, u64) -> Result<Vec<Vec<u8>>, E>,
) -> Result<Option<Vec<u8>>, E> {
    if !within(index, width, size) {
        return Ok(None);
    }
    let entries = fetch(index * TILE_WIDTH, u64::from(width))?;
    let mut bundle = Vec::with_capacity(entries.iter().map(|e| e.len() + 2).sum());
    for bytes in &entries {
        let len =
            u16::try_from(bytes.len()).map_err(|_| StoreError::EntrySize { len: bytes.len() })?;
        bundle.extend_from_slice(&len.to_be_bytes());
        bundle.extend_from_slice(bytes);
    }
    Ok(Some(bundle))
}

/// The entries of a bundle that must hold exactly `width` of them.
pub fn parse_entries(bundle: &[u8], width: u16) -> Option<Vec<&[u8]>> {
    let mut entries = Vec::with_capacity(usize::from(width));
    let mut rest = bundle;
    while !rest.is_empty() {
        if entries.len() == usize::from(width) {
            return None;
        }
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (entry, tail) = tail.split_at_checked(len)?;
        entries.push(entry);
        rest = tail;
    }
    (entries.len() == usize::from(width)).then_some(entries)
}

/// The hashes of a tile that must hold exactly `width` of them.
pub fn parse_tile(tile: &[u8], width: u16) -> Option<Vec<Hash>> {
    if tile.len() != usize::from(width) * HASH_LEN {
        return None;
    }
    Some(
        tile.chunks_exact(HASH_LEN)
            .filter_map(Hash::from_slice)
            .collect(),
    )
}

/// Builds a tree from its leaves, one at a time, and hands out each hash tile as it completes:
/// what a monitor recomputes from the entries alone, to compare with what a server serves.
#[derive(Debug)]
pub struct TileHasher {
    frontier: Frontier,
    /// The hashes of each level's current, incomplete tile.
    pending: Vec<Vec<Hash>>,
    /// Full tiles completed at each level.
    completed: Vec<u64>,
}

impl Default for TileHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// A tile: its level, index and hashes.
pub type Tile = (u8, u64, Vec<Hash>);

impl TileHasher {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            frontier: Frontier::default(),
            pending: vec![Vec::new(); usize::from(MAX_LEVEL) + 1],
            completed: vec![0; usize::from(MAX_LEVEL) + 1],
        }
    }

    /// Add a leaf; returns the full tiles it completes.
    pub fn push(&mut self, leaf: Hash) -> Vec<Tile> {
        let mut made = Vec::new();
        self.frontier.push(leaf, &mut made);
        let mut full = Vec::new();
        for level in 0..=MAX_LEVEL {
            // The hash of height 8·level this leaf completed, if any: `made` holds the leaf,
            // then one hash per height it completed.
            let Some(hash) = made.get(usize::from(level) * 8) else {
                break;
            };
            let (Some(pending), Some(done)) = (
                self.pending.get_mut(usize::from(level)),
                self.completed.get_mut(usize::from(level)),
            ) else {
                break;
            };
            pending.push(*hash);
            if pending.len() == 256 {
                full.push((level, *done, std::mem::take(pending)));
                *done += 1;
            }
        }
        full
    }

    /// The leaves so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The partial tiles at the right edge of each level (none where the level ends on a full
    /// tile).
    pub fn partial_tiles(&self) -> Vec<Tile> {
        (0..=MAX_LEVEL)
            .zip(self.pending.iter().zip(&self.completed))
            .filter(|(_, (pending, _))| !pending.is_empty())
            .map(|(level, (pending, done))| (level, *done, pending.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LogStore, MemoryStore};

    #[test]
    fn paths_follow_the_specification_and_parse_back() {
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(999), "999");
        assert_eq!(encode_index(1000), "x001/000");
        assert_eq!(encode_index(1_234_067), "x001/x234/067");
        for (path, resource) in [
            ("checkpoint", Resource::Checkpoint),
            (
                "tile/0/x001/x234/067",
                Resource::Tile {
                    level: 0,
                    index: 1_234_067,
                    width: 256,
                },
            ),
            (
                "tile/5/000.p/255",
                Resource::Tile {
                    level: 5,
                    index: 0,
                    width: 255,
                },
            ),
            (
                "tile/entries/x001/000.p/1",
                Resource::Entries {
                    index: 1000,
                    width: 1,
                },
            ),
        ] {
            assert_eq!(Resource::parse(path), Some(resource), "{path}");
            assert_eq!(resource.path(), path);
        }
        for bad in [
            "tile/6/000",
            "tile/01/000",
            "tile/0/0",
            "tile/0/1234",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/x1/002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/07",
            "tile/data/000",
            "tile/0/000/",
            "/checkpoint",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
        ] {
            assert_eq!(Resource::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn tiles_recomputed_from_entries_match_the_tiles_read_from_the_store() {
        let mut store = MemoryStore::new();
        let mut hasher = TileHasher::new();
        let mut tiles = Vec::new();
        let size = 256 * 256 + 3 * 256 + 7;
        for i in 0..size {
            let entry = format!("entry {i}").into_bytes();
            store.append(&[&entry]).unwrap();
            tiles.extend(hasher.push(Hash::leaf(&entry)));
        }
        assert_eq!(hasher.root(), store.root_at(size).unwrap());
        // 259 full tiles at level 0, one at level 1; partial: 7 hashes at level 0, 3 at level 1,
        // and at level 2 the one subtree of 65 536 leaves.
        assert_eq!(tiles.len(), 259 + 1);
        let partial = hasher.partial_tiles();
        assert_eq!(
            partial
                .iter()
                .map(|t| (t.0, t.1, t.2.len()))
                .collect::<Vec<_>>(),
            vec![(0, 259, 7), (1, 1, 3), (2, 0, 1)]
        );
        for (level, index, hashes) in tiles.iter().chain(&partial) {
            let width = u16::try_from(hashes.len()).unwrap();
            let served = read_tile(&store, size, *level, *index, width)
                .unwrap()
                .unwrap();
            assert_eq!(parse_tile(&served, width).unwrap(), *hashes);
        }
        // Nothing beyond the tree: the next partial width, the next tile, a level above.
        assert_eq!(read_tile(&store, size, 0, 259, 8).unwrap(), None);
        assert_eq!(read_tile(&store, size, 0, 260, 1).unwrap(), None);
        assert_eq!(read_tile(&store, size, 2, 0, 2).unwrap(), None);
        assert_eq!(read_tile(&store, size, 3, 0, 1).unwrap(), None);
        let fetch = |first: u64, n: u64| (first..first + n).map(|i| store.entry(i)).collect();
        let bundle = read_entries(size, 259, 7, fetch).unwrap().unwrap();
        let entries = parse_entries(&bundle, 7).unwrap();
        assert_eq!(entries[6], format!("entry {}", size - 1).as_bytes());
        assert!(read_entries(size, 259, 8, fetch).unwrap().is_none());
        assert!(parse_entries(&bundle, 6).is_none());
        assert!(parse_entries(&bundle[..bundle.len() - 1], 7).is_none());
    }
}
