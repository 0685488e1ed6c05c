//! The Merkle tree of RFC 9162 section 2.1: roots, inclusion proofs and consistency proofs.
//!
//! Proofs are generated from the hashes of *perfect* subtrees (2^level leaves starting at a
//! multiple of 2^level), which a store can read in O(1) each. Every other node a proof needs lies
//! on the tree's right border and is folded from the at most 64 perfect subtrees that make up the
//! tree, so a proof costs O(log n) reads. Verification needs nothing but hashes.

use crate::hash::Hash;

/// A source of perfect-subtree hashes: what proof generation reads. Its errors are its own (a
/// store's I/O or corruption); the tree adds only [`NotANode`].
pub trait Subtrees {
    /// Why a hash could not be read.
    type Error: From<NotANode>;

    /// The hash of the perfect subtree of `2^level` leaves that starts at leaf `index << level`.
    /// Only subtrees that lie entirely inside the current tree may be asked for.
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;

    /// The hashes of `count` consecutive perfect subtrees of `2^level` leaves, from the one at
    /// `index` (a tile's hashes). Stores that can read them at once override this.
    fn perfect_run(&self, level: u32, index: u64, count: u64) -> Result<Vec<Hash>, Self::Error> {
        (index..index.saturating_add(count))
            .map(|i| self.perfect(level, i))
            .collect()
    }
}

/// A proof asked for a node the tree does not have: the source's hashes contradict its size.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node [{lo}, {hi}) is not a node of the tree of size {size}")]
pub struct NotANode {
    /// The node's first leaf.
    pub lo: u64,
    /// One past its last leaf.
    pub hi: u64,
    /// The tree's size.
    pub size: u64,
}

/// Why a proof was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The claimed index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The old tree is larger than the new one.
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizesOutOfOrder {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// The proof has more hashes than a proof for these sizes can have.
    #[error("the proof has too many hashes for these sizes")]
    TooLong,
    /// The proof has fewer hashes than a proof for these sizes must have.
    #[error("the proof has too few hashes for these sizes")]
    TooShort,
    /// Consistency with the empty tree proves nothing.
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyOldTree,
    /// The proof was for equal trees but was not empty.
    #[error("the proof must be empty for these sizes")]
    NotEmpty,
    /// The proof leads to a different root.
    #[error("the proof leads to root {computed}, not to the expected {expected}")]
    RootMismatch {
        /// The root the proof leads to.
        computed: Hash,
        /// The root it should lead to.
        expected: Hash,
    },
    /// A consistency proof leads to a different root for the old tree.
    #[error("the proof leads to old root {computed}, not to the expected {expected}")]
    OldRootMismatch {
        /// The old root the proof leads to.
        computed: Hash,
        /// The old root it should lead to.
        expected: Hash,
    },
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The node hashes a proof needs from a tree of `size` leaves: perfect subtrees from the source,
/// right-border nodes folded once from the tree's perfect decomposition.
struct View<'a, S: ?Sized> {
    source: &'a S,
    size: u64,
    /// `(lo, MTH(D[lo:size]))` for every start of a perfect part of the tree, ascending.
    border: Vec<(u64, Hash)>,
}

impl<'a, S: Subtrees + ?Sized> View<'a, S> {
    fn new(source: &'a S, size: u64) -> Result<Self, S::Error> {
        let parts = perfect_parts(source, size)?;
        let mut border = Vec::with_capacity(parts.len());
        let mut acc: Option<Hash> = None;
        for (lo, hash) in parts.into_iter().rev() {
            let folded = match acc {
                None => hash,
                Some(right) => Hash::node(&hash, &right),
            };
            acc = Some(folded);
            border.push((lo, folded));
        }
        border.reverse();
        Ok(Self {
            source,
            size,
            border,
        })
    }

    fn root(&self) -> Hash {
        self.border.first().map_or_else(Hash::empty, |(_, h)| *h)
    }

    /// MTH(D[lo:hi]) for a node of this tree.
    fn subtree(&self, lo: u64, hi: u64) -> Result<Hash, S::Error> {
        let len = hi - lo;
        if len.is_power_of_two() && lo.is_multiple_of(len) {
            let level = len.trailing_zeros();
            return self.source.perfect(level, lo >> level);
        }
        if hi == self.size
            && let Some((_, hash)) = self.border.iter().find(|(start, _)| *start == lo)
        {
            return Ok(*hash);
        }
        Err(NotANode {
            lo,
            hi,
            size: self.size,
        }
        .into())
    }

    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) -> Result<(), S::Error> {
        if hi - lo <= 1 {
            return Ok(());
        }
        let k = split(hi - lo);
        if m < lo + k {
            self.path(m, lo, lo + k, out)?;
            out.push(self.subtree(lo + k, hi)?);
        } else {
            self.path(m, lo + k, hi, out)?;
            out.push(self.subtree(lo, lo + k)?);
        }
        Ok(())
    }

    fn subproof(
        &self,
        m: u64,
        lo: u64,
        hi: u64,
        complete: bool,
        out: &mut Vec<Hash>,
    ) -> Result<(), S::Error> {
        let len = hi - lo;
        if m == len {
            if !complete {
                out.push(self.subtree(lo, hi)?);
            }
            return Ok(());
        }
        let k = split(len);
        if m <= k {
            self.subproof(m, lo, lo + k, complete, out)?;
            out.push(self.subtree(lo + k, hi)?);
        } else {
            self.subproof(m - k, lo + k, hi, false, out)?;
            out.push(self.subtree(lo, lo + k)?);
        }
        Ok(())
    }
}

/// The perfect subtrees that make up the tree of `size` leaves, left (largest) first, with the
/// leaf each starts at: one per set bit of `size`.
fn perfect_parts<S: Subtrees + ?Sized>(
    source: &S,
    size: u64,
) -> Result<Vec<(u64, Hash)>, S::Error> {
    let mut parts = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size >> level & 1 == 1 {
            parts.push((start, source.perfect(level, start >> level)?));
            start += 1u64 << level;
        }
    }
    Ok(parts)
}

/// The root of the tree of the first `size` leaves. The caller checks `size` is in the tree.
pub(crate) fn root<S: Subtrees + ?Sized>(source: &S, size: u64) -> Result<Hash, S::Error> {
    Ok(View::new(source, size)?.root())
}

/// PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1. The caller checks `index < size`.
pub(crate) fn inclusion_proof<S: Subtrees + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    let view = View::new(source, size)?;
    let mut out = Vec::with_capacity(64);
    view.path(index, 0, size, &mut out)?;
    Ok(out)
}

/// PROOF(old, D[0:new]) of RFC 9162 section 2.1.4.1. The caller checks `old <= new`.
pub(crate) fn consistency_proof<S: Subtrees + ?Sized>(
    source: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::with_capacity(64);
    if old == 0 || old == new {
        return Ok(out);
    }
    let view = View::new(source, new)?;
    view.subproof(old, 0, new, true, &mut out)?;
    Ok(out)
}

/// Verify that `leaf` is the leaf at `index` in the tree of `size` leaves whose root is `root`
/// (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let computed = root_from_inclusion(leaf, index, size, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// The root an inclusion proof leads to. `index < size` must hold.
fn root_from_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::TooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = Hash::node(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = Hash::node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::TooShort);
    }
    Ok(r)
}

/// Verify that the tree of `new` leaves with root `new_root` extends the tree of `old` leaves
/// with root `old_root` (RFC 9162 section 2.1.4.2). Equal sizes need an empty proof and equal
/// roots. A proof from the empty tree proves nothing and is refused, as in RFC 9162, where the
/// old size is positive.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::NotEmpty);
        }
        if old_root != new_root {
            return Err(ProofError::RootMismatch {
                computed: *old_root,
                expected: *new_root,
            });
        }
        return Ok(());
    }
    let (first, rest) = if old.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => return Err(ProofError::TooShort),
        }
    };
    let mut fn_ = old - 1;
    let mut sn = new - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if sn == 0 {
            return Err(ProofError::TooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = Hash::node(c, &fr);
            sr = Hash::node(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = Hash::node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::TooShort);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch {
            computed: fr,
            expected: *old_root,
        });
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(())
}

/// The perfect subtrees of a growing tree, right to left: what appending needs to know.
///
/// Appending a leaf emits, in post-order, the leaf hash and then every perfect subtree the leaf
/// completes. Stores keep those hashes in that order, so the hash of perfect subtree
/// `(level, index)` sits at [`postorder_position`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Frontier {
    size: u64,
    /// The perfect parts of the tree, largest (leftmost) first.
    stack: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the tree of `size` leaves held by `source`.
    pub(crate) fn load<S: Subtrees + ?Sized>(source: &S, size: u64) -> Result<Self, S::Error> {
        let stack = perfect_parts(source, size)?
            .into_iter()
            .map(|(_, hash)| hash)
            .collect();
        Ok(Self { size, stack })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Add a leaf; push the hashes it creates, in post-order, onto `out`.
    pub(crate) fn push(&mut self, leaf: Hash, out: &mut Vec<Hash>) {
        out.push(leaf);
        let mut hash = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            // An odd size always has a perfect part of the current level on the stack.
            let Some(left) = self.stack.pop() else { break };
            hash = Hash::node(&left, &hash);
            out.push(hash);
            size >>= 1;
        }
        self.stack.push(hash);
        self.size += 1;
    }

    /// The root of the tree so far.
    pub(crate) fn root(&self) -> Hash {
        let mut parts = self.stack.iter().rev();
        let Some(mut acc) = parts.next().copied() else {
            return Hash::empty();
        };
        for left in parts {
            acc = Hash::node(left, &acc);
        }
        acc
    }
}

/// The number of post-order hashes a tree of `size` leaves stores: `2·size − popcount(size)`.
pub(crate) fn postorder_count(size: u64) -> Option<u64> {
    size.checked_mul(2)?
        .checked_sub(u64::from(size.count_ones()))
}

/// Where the perfect subtree `(level, index)` sits among the post-order hashes: after every hash
/// of the leaves before its last leaf, that leaf, and `level` parents.
pub(crate) fn postorder_position(level: u32, index: u64) -> Option<u64> {
    let end = index
        .checked_add(1)?
        .checked_mul(1u64.checked_shl(level)?)?;
    postorder_count(end - 1)?.checked_add(u64::from(level))
}

/// Whether `(level, index)` names a perfect subtree inside a tree of `size` leaves.
pub(crate) fn is_inside(level: u32, index: u64, size: u64) -> bool {
    index
        .checked_add(1)
        .and_then(|i| i.checked_mul(1u64.checked_shl(level)?))
        .is_some_and(|end| level < 64 && end <= size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postorder_positions_follow_append_order() {
        // Leaves 0..4: L0 L1 N01 L2 L3 N23 N0123.
        assert_eq!(postorder_position(0, 0), Some(0));
        assert_eq!(postorder_position(0, 1), Some(1));
        assert_eq!(postorder_position(1, 0), Some(2));
        assert_eq!(postorder_position(0, 2), Some(3));
        assert_eq!(postorder_position(0, 3), Some(4));
        assert_eq!(postorder_position(1, 1), Some(5));
        assert_eq!(postorder_position(2, 0), Some(6));
        assert_eq!(postorder_count(4), Some(7));
        assert_eq!(postorder_count(3), Some(4));
        assert_eq!(postorder_position(64, 0), None);
        assert_eq!(postorder_position(1, u64::MAX), None);
    }

    #[test]
    fn frontier_emits_exactly_postorder() {
        let mut frontier = Frontier::default();
        let mut out = Vec::new();
        for i in 0..100u64 {
            frontier.push(Hash::leaf(&i.to_be_bytes()), &mut out);
            assert_eq!(u64::try_from(out.len()).ok(), postorder_count(i + 1));
        }
    }

    #[test]
    fn inside_checks_the_whole_subtree() {
        assert!(is_inside(0, 4, 5));
        assert!(!is_inside(0, 5, 5));
        assert!(is_inside(2, 0, 5));
        assert!(!is_inside(2, 1, 5));
        assert!(!is_inside(64, 0, u64::MAX));
    }
}
