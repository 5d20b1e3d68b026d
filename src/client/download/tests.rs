//! [`Download`] over byte streams cut at random points, resumed, and tampered with.

use super::*;

/// Deterministic bytes and cut points (no test depends on the machine's randomness).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tree_of(data: &[u8]) -> Pieces {
    let mut h = pieces::PieceHasher::new();
    h.update(data);
    h.finish()
}

/// What the relay sends for a fetch from piece `from`.
fn body(tree: &Pieces, data: &[u8], from: u64) -> Vec<u8> {
    let start = usize::try_from(from).unwrap() * pieces::PIECE;
    let mut out = tree.to_bytes();
    out.extend_from_slice(&data[start.min(data.len())..]);
    out
}

fn scratch_bytes(d: Download) -> Vec<u8> {
    let f = d.into_scratch().expect("complete");
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut &f, &mut out).unwrap();
    out
}

#[tokio::test]
async fn a_transfer_cut_at_random_points_resumes_byte_exact() {
    let data = bytes(5 * pieces::PIECE + 1234, 7);
    let tree = tree_of(&data);
    let root = tree.root();
    let mut cuts = bytes(64, 99).into_iter().map(u64::from);
    for round in 0..6u64 {
        let mut d = Download::new(tempfile::tempfile().unwrap(), data.len() as u64, Some(root));
        let mut streams = 0;
        loop {
            streams += 1;
            let full = body(&tree, &data, d.next());
            // Cut somewhere in this stream: in the list, mid-piece, or on a piece boundary.
            let cut = match (round, streams) {
                (_, n) if n > 4 => full.len(),
                (0, _) => 10,
                (1, _) => tree.to_bytes().len() + pieces::PIECE,
                _ => {
                    let r = cuts.next().unwrap_or(1) * 7919 * (round + 1);
                    usize::try_from(r).unwrap() % full.len()
                }
            };
            let before = d.next();
            match d.take(&mut &full[..cut]).await.unwrap() {
                Taken::Complete => break,
                Taken::Broken(e) => {
                    assert!(d.next() >= before, "{e}");
                    // Only whole, checked pieces count.
                    let arrived = cut.saturating_sub(tree.to_bytes().len()) as u64;
                    assert_eq!(
                        d.next(),
                        before + arrived / pieces::PIECE as u64,
                        "cut {cut}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(streams > 1, "round {round} was never cut");
        assert_eq!(d.root(), Some(root));
        assert!(scratch_bytes(d) == data, "round {round}");
    }
}

#[tokio::test]
async fn an_altered_piece_or_list_is_refused_and_nothing_of_it_is_written() {
    let data = bytes(3 * pieces::PIECE + 5, 3);
    let tree = tree_of(&data);
    let root = tree.root();
    for k in 0..4usize {
        let mut full = body(&tree, &data, 0);
        let at = tree.to_bytes().len() + k * pieces::PIECE + 2;
        full[at] ^= 0x40;
        let scratch = tempfile::tempfile().unwrap();
        let probe = scratch.try_clone().unwrap();
        let mut d = Download::new(scratch, data.len() as u64, Some(root));
        let Taken::Altered(why) = d.take(&mut full.as_slice()).await.unwrap() else {
            panic!("piece {k} accepted");
        };
        assert!(why.contains(&format!("piece {k}")), "{why}");
        assert_eq!(d.next(), k as u64);
        // Only the pieces before it are in the scratch file.
        let len = probe.metadata().unwrap().len();
        assert!(len <= (k * pieces::PIECE) as u64, "piece {k}: {len}");
        assert!(d.into_scratch().is_none());
    }
    // A list that is not the signed one: nothing is read past it.
    let mut full = body(&tree, &data, 0);
    full[5] ^= 1;
    let scratch = tempfile::tempfile().unwrap();
    let probe = scratch.try_clone().unwrap();
    let mut d = Download::new(scratch, data.len() as u64, Some(root));
    assert!(matches!(
        d.take(&mut full.as_slice()).await.unwrap(),
        Taken::Altered(_)
    ));
    assert_eq!(probe.metadata().unwrap().len(), 0);
    // A resumed stream whose list changed.
    let good = body(&tree, &data, 0);
    let mut d = Download::new(tempfile::tempfile().unwrap(), data.len() as u64, Some(root));
    let cut = tree.to_bytes().len() + pieces::PIECE + 9;
    assert!(matches!(
        d.take(&mut &good[..cut]).await.unwrap(),
        Taken::Broken(_)
    ));
    let other = tree_of(&bytes(data.len(), 4));
    let swapped = body(&other, &data, d.next());
    assert!(matches!(
        d.take(&mut swapped.as_slice()).await.unwrap(),
        Taken::Altered(_)
    ));
}

#[test]
fn the_relays_damage_reset_is_told_from_a_broken_transfer() {
    let damaged = std::io::Error::from(quinn::ReadError::Reset(quinn::VarInt::from_u32(2)));
    assert!(matches!(broken(&damaged), Taken::Damaged), "{damaged}");
    let other = std::io::Error::from(quinn::ReadError::Reset(quinn::VarInt::from_u32(0)));
    assert!(matches!(broken(&other), Taken::Broken(_)));
    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    assert!(matches!(broken(&eof), Taken::Broken(_)));
}
