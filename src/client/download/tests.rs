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
    match d.into_kept().expect("complete") {
        Kept::File(f) => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut &f, &mut out).unwrap();
            out
        }
        Kept::Memory(m) => m,
    }
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

/// A small envelope held in memory (no scratch file): cut at every point of its one stream
/// and resumed, byte-exact; an altered byte refused with nothing kept; and nothing longer than
/// one piece is held this way.
#[tokio::test]
async fn a_small_envelope_is_held_in_memory_resumed_byte_exact_and_refused_when_altered() {
    for len in [0usize, 1, 1234, pieces::PIECE] {
        let data = bytes(len, 11);
        let tree = tree_of(&data);
        let full = body(&tree, &data, 0);
        for cut in (0..full.len()).step_by(full.len() / 7 + 1) {
            let mut d = Download::in_memory(len as u64, Some(tree.root())).unwrap();
            let first = d.take(&mut &full[..cut]).await.unwrap();
            assert!(
                matches!(first, Taken::Broken(_)),
                "{len} cut at {cut}: {first:?}"
            );
            let again = body(&tree, &data, d.next());
            assert!(matches!(
                d.take(&mut again.as_slice()).await.unwrap(),
                Taken::Complete
            ));
            let Some(Kept::Memory(held)) = d.into_kept() else {
                panic!("{len}: not held in memory");
            };
            assert!(held == data, "{len} cut at {cut}: not byte-exact");
        }
        if len > 0 {
            let mut altered = full.clone();
            let last = altered.len() - 1;
            altered[last] ^= 0x10;
            let mut d = Download::in_memory(len as u64, Some(tree.root())).unwrap();
            assert!(matches!(
                d.take(&mut altered.as_slice()).await.unwrap(),
                Taken::Altered(_)
            ));
            assert!(d.into_kept().is_none(), "{len}: altered bytes kept");
        }
    }
    assert!(Download::in_memory(IN_MEMORY as u64 + 1, None).is_err());
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
        assert!(d.into_kept().is_none());
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

/// An envelope sealed to a new X25519 key: the key and the ciphertext.
fn sealed(plaintext: &[u8]) -> (crate::core::envelope::keys::AgeIdentity, Vec<u8>) {
    let age = crate::core::envelope::keys::AgeIdentity::generate(true).unwrap();
    let mut ciphertext = Vec::new();
    crate::core::envelope::seal(
        age.to_public().as_recipient(),
        &mut &plaintext[..],
        &mut ciphertext,
        2,
    )
    .unwrap();
    (age, ciphertext)
}

/// [`Arriving`], recording the furthest byte any read asked for once it was let through.
struct Recording {
    inner: Arriving,
    furthest: std::sync::atomic::AtomicU64,
}

impl crate::core::envelope::stream::ReadAt for Recording {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        self.furthest
            .fetch_max(offset + n as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(n)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }
    fn release_below(&self, offset: u64) {
        self.inner.release_below(offset);
    }
}

/// Opens a ciphertext of `len` bytes with `age` as its pieces arrive in `arrived`, into `out`,
/// on a thread of its own (as `fetch -o` does, done when it ends): the outcome, and the
/// furthest byte it read.
fn open_as_it_arrives(
    age: &crate::core::envelope::keys::AgeIdentity,
    len: u64,
    arrived: Arc<Arrived>,
    out: File,
) -> std::sync::mpsc::Receiver<(
    std::result::Result<u64, crate::core::envelope::EnvelopeError>,
    u64,
)> {
    let age = crate::core::envelope::keys::AgeIdentity::parse(&age.to_secret_string()).unwrap();
    let source = Recording {
        inner: Arriving::new(len, arrived),
        furthest: std::sync::atomic::AtomicU64::new(0),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let opened = crate::core::envelope::open_at::<std::io::Empty>(
            &[age.as_identity()],
            crate::core::envelope::SealInput::File(&source),
            &out,
            2,
        );
        let furthest = source.furthest.load(std::sync::atomic::Ordering::SeqCst);
        // The reader ends here (dropped), as `fetch -o`'s does.
        drop(source);
        let _ = tx.send((opened, furthest));
    });
    rx
}

const OPENED_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// Takes the whole of `ciphertext` into `d` over streams cut at points drawn from `cuts` (the
/// fifth stream and later are whole): how many streams it took.
async fn take_cut(
    d: &mut Download,
    tree: &Pieces,
    ciphertext: &[u8],
    cuts: &mut impl Iterator<Item = u64>,
    round: u64,
) -> usize {
    let mut streams = 0;
    loop {
        streams += 1;
        let full = body(tree, ciphertext, d.next());
        let cut = if streams > 4 {
            full.len()
        } else {
            let r = cuts.next().unwrap_or(1) * 7919 * (round + 1);
            usize::try_from(r).unwrap() % full.len()
        };
        match d.take(&mut &full[..cut]).await.unwrap() {
            Taken::Complete => return streams,
            Taken::Broken(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Opened while it arrives over streams cut at random points: byte-exact, and with no scratch
/// file at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_opened_while_it_arrives_over_cut_streams_comes_out_byte_exact() {
    let plaintext = bytes(5 * pieces::PIECE + 777, 21);
    let (age, ciphertext) = sealed(&plaintext);
    let tree = tree_of(&ciphertext);
    let len = ciphertext.len() as u64;
    let mut cuts = bytes(64, 5).into_iter().map(u64::from);
    for round in 0..4u64 {
        let out = tempfile::tempfile().unwrap();
        let arrived = Arc::new(Arrived::default());
        let done = open_as_it_arrives(&age, len, arrived.clone(), out.try_clone().unwrap());
        let mut d = Download::arriving(len, tree.root(), arrived);
        let streams = take_cut(&mut d, &tree, &ciphertext, &mut cuts, round).await;
        assert!(streams > 1, "round {round} was never cut");
        assert!(d.complete() && d.into_kept().is_none());
        let (opened, _) = done.recv_timeout(OPENED_WITHIN).expect("the opener hung");
        assert_eq!(opened.unwrap(), plaintext.len() as u64, "round {round}");
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &out, &mut got).unwrap();
        assert!(got == plaintext, "round {round}: not byte-exact");
    }
}

/// An envelope of many opener batches, over cut streams: byte-exact, and the checked pieces
/// held in memory never pass the window (the opener lets go of each batch it is done with,
/// and the download waits for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_envelope_opened_while_it_arrives_holds_at_most_its_window() {
    let plaintext = bytes(3 * usize::try_from(arrived::WINDOW).unwrap() + 4321, 33);
    let (age, ciphertext) = sealed(&plaintext);
    let tree = tree_of(&ciphertext);
    let len = ciphertext.len() as u64;
    let mut cuts = bytes(64, 6).into_iter().map(u64::from);
    let out = tempfile::tempfile().unwrap();
    let arrived = Arc::new(Arrived::default());
    let done = open_as_it_arrives(&age, len, arrived.clone(), out.try_clone().unwrap());
    let mut d = Download::arriving(len, tree.root(), arrived.clone());
    assert!(take_cut(&mut d, &tree, &ciphertext, &mut cuts, 1).await > 1);
    let (opened, _) = done.recv_timeout(OPENED_WITHIN).expect("the opener hung");
    assert_eq!(opened.unwrap(), plaintext.len() as u64);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut &out, &mut got).unwrap();
    assert!(got == plaintext, "not byte-exact");
    let peak = arrived.peak();
    assert!(
        peak <= arrived::WINDOW + pieces::PIECE as u64,
        "held {peak} bytes of a {len}-byte envelope at once (window {})",
        arrived::WINDOW
    );
}

/// An opener that fails at once (the envelope is sealed to another key) does not hold the
/// download up: the rest is taken without being kept, and the download completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_goes_on_to_its_end_when_the_opener_fails() {
    let plaintext = bytes(2 * usize::try_from(arrived::WINDOW).unwrap(), 34);
    let (_, ciphertext) = sealed(&plaintext);
    let (other, _) = sealed(b"x");
    let tree = tree_of(&ciphertext);
    let len = ciphertext.len() as u64;
    let arrived = Arc::new(Arrived::default());
    let done = open_as_it_arrives(&other, len, arrived.clone(), tempfile::tempfile().unwrap());
    let mut d = Download::arriving(len, tree.root(), arrived.clone());
    let full = body(&tree, &ciphertext, 0);
    let Ok(taken) = tokio::time::timeout(OPENED_WITHIN, d.take(&mut full.as_slice())).await else {
        // Let the download's thread go, so the test fails instead of hanging.
        arrived.abandon();
        panic!("the download waited for an opener that had ended");
    };
    assert!(matches!(taken.unwrap(), Taken::Complete));
    let (opened, _) = done.recv_timeout(OPENED_WITHIN).expect("the opener hung");
    assert!(opened.is_err(), "opened with the wrong key");
    assert!(arrived.peak() <= arrived::WINDOW + pieces::PIECE as u64);
}

/// A piece that does not match: the opener has read nothing of it or past it, and once the
/// download is given up (as a failed fetch does) it fails instead of waiting; the same for a
/// transfer that breaks and is never resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opener_reads_nothing_unchecked_and_stops_when_the_download_is_given_up() {
    let plaintext = bytes(4 * pieces::PIECE, 8);
    let (age, ciphertext) = sealed(&plaintext);
    let tree = tree_of(&ciphertext);
    let len = ciphertext.len() as u64;
    let list = tree.to_bytes().len();
    for (k, altered) in [(2u64, true), (1, false)] {
        let arrived = Arc::new(Arrived::default());
        let done = open_as_it_arrives(&age, len, arrived.clone(), tempfile::tempfile().unwrap());
        let mut d = Download::arriving(len, tree.root(), arrived.clone());
        let mut full = body(&tree, &ciphertext, 0);
        let at = list + usize::try_from(k).unwrap() * pieces::PIECE;
        let taken = if altered {
            full[at + 100] ^= 0x01;
            d.take(&mut full.as_slice()).await.unwrap()
        } else {
            d.take(&mut &full[..at + 100]).await.unwrap()
        };
        match (altered, taken) {
            (true, Taken::Altered(_)) | (false, Taken::Broken(_)) => {}
            (_, other) => panic!("piece {k}: {other:?}"),
        }
        assert_eq!(d.next(), k);
        // The opener is still waiting for piece k; the fetch gives up.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            matches!(done.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)),
            "piece {k}: the opener ended before the download was given up"
        );
        arrived.abandon();
        let (opened, furthest) = done.recv_timeout(OPENED_WITHIN).expect("the opener hung");
        assert!(opened.is_err(), "piece {k}: opened without it");
        assert!(
            furthest <= k * pieces::PIECE as u64,
            "piece {k}: the opener read up to byte {furthest}, past what arrived checked"
        );
    }
}
