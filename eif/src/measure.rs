//! The measurements a Nitro enclave reports for an image, computed while the image streams by.
//!
//! PCR0 and PCR1 share their first bytes (kernel, command line, first ramdisk), so one SHA-384
//! context serves both: PCR1 is taken from a copy at the end of the first ramdisk. The other
//! ramdisks are hashed twice, for PCR0 and for PCR2; when they are large, PCR2 is hashed on a
//! second thread so that measuring an image costs about one hash of its bytes in wall time.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use aws_lc_rs::digest::{Context, SHA384};

use attest::MeasurementSet;
use attest::{PcrIndex, PcrValue};

use crate::error::ImageError;

/// Application ramdisks at least this large are hashed for PCR2 on a second thread.
const WORKER_THRESHOLD: u64 = 4 * 1024 * 1024;
/// Chunks queued for the PCR2 thread.
const QUEUE_DEPTH: usize = 4;

/// An image's measurements, as a Nitro enclave booted from it reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Measurements {
    /// The whole image: kernel, command line and every ramdisk.
    pub pcr0: PcrValue,
    /// Kernel, command line and the first (boot) ramdisk.
    pub pcr1: PcrValue,
    /// The other (application) ramdisks.
    pub pcr2: PcrValue,
    /// The signing certificate, when the image is signed.
    pub pcr8: Option<PcrValue>,
}

impl Measurements {
    /// The measurements of an image made of these parts, in memory. `signing_certificate` is the
    /// DER of the certificate a signed image carries.
    pub fn of_parts(
        kernel: &[u8],
        cmdline: &[u8],
        ramdisks: &[&[u8]],
        signing_certificate: Option<&[u8]>,
    ) -> Result<Self, ImageError> {
        let mut measurer = Measurer::new();
        measurer.boot(kernel);
        measurer.boot(cmdline);
        let mut ramdisks = ramdisks.iter();
        if let Some(first) = ramdisks.next() {
            measurer.boot(first);
        }
        let app_len = ramdisks.clone().map(|r| r.len()).sum::<usize>();
        for ramdisk in ramdisks {
            measurer.start_app(u64::try_from(app_len).unwrap_or(u64::MAX));
            measurer.app(ramdisk.to_vec());
        }
        let [pcr0, pcr1, pcr2] = measurer.finish()?;
        Ok(Measurements {
            pcr0,
            pcr1,
            pcr2,
            pcr8: signing_certificate.map(PcrValue::measure),
        })
    }

    /// The PCRs by index: 0, 1, 2 and, when signed, 8.
    pub fn pcrs(&self) -> BTreeMap<PcrIndex, PcrValue> {
        let mut out = BTreeMap::new();
        let slots = [
            (0, Some(self.pcr0)),
            (1, Some(self.pcr1)),
            (2, Some(self.pcr2)),
            (8, self.pcr8),
        ];
        for (index, value) in slots {
            if let (Some(index), Some(value)) = (PcrIndex::new(index), value) {
                out.insert(index, value);
            }
        }
        out
    }

    /// The policy measurement set that pins exactly this image.
    pub fn measurement_set(&self) -> MeasurementSet {
        self.pcrs()
            .into_iter()
            .fold(MeasurementSet::pcr0(self.pcr0), |set, (index, value)| {
                set.and(index, value)
            })
    }
}

enum App {
    Inline(Context),
    Worker {
        chunks: SyncSender<Vec<u8>>,
        spare: Receiver<Vec<u8>>,
        done: JoinHandle<Context>,
    },
}

/// Streams an image's measured bytes in order: [`Measurer::boot`] for the kernel, command line
/// and first ramdisk, then [`Measurer::start_app`] and [`Measurer::app`] for each other ramdisk.
pub(crate) struct Measurer {
    image: Context,
    boot: Option<PcrValue>,
    app: App,
}

fn extend_zero(context: Context) -> PcrValue {
    PcrValue::ZERO.extend(context.finish().as_ref())
}

impl Measurer {
    pub(crate) fn new() -> Self {
        Measurer {
            image: Context::new(&SHA384),
            boot: None,
            app: App::Inline(Context::new(&SHA384)),
        }
    }

    /// Bytes of the kernel, the command line or the first ramdisk.
    pub(crate) fn boot(&mut self, bytes: &[u8]) {
        self.image.update(bytes);
    }

    /// An application ramdisk begins; `remaining` is how many application bytes are still to
    /// come, to decide whether PCR2 is worth a thread.
    pub(crate) fn start_app(&mut self, remaining: u64) {
        if self.boot.is_none() {
            self.boot = Some(extend_zero(self.image.clone()));
            if remaining >= WORKER_THRESHOLD
                && let App::Inline(context) = &self.app
            {
                let mut context = context.clone();
                let (chunks, incoming) = sync_channel::<Vec<u8>>(QUEUE_DEPTH);
                let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUE_DEPTH + 2);
                let done = std::thread::spawn(move || {
                    for chunk in incoming {
                        context.update(&chunk);
                        // The reader may have stopped early; a lost spare buffer is harmless.
                        let _ = give_back.try_send(chunk);
                    }
                    context
                });
                self.app = App::Worker {
                    chunks,
                    spare,
                    done,
                };
            }
        }
    }

    /// Bytes of an application ramdisk. Returns a buffer for the caller to read the next chunk
    /// into.
    pub(crate) fn app(&mut self, chunk: Vec<u8>) -> Vec<u8> {
        self.image.update(&chunk);
        match &mut self.app {
            App::Inline(context) => {
                context.update(&chunk);
                chunk
            }
            App::Worker { chunks, spare, .. } => {
                let capacity = chunk.capacity();
                if let Err(returned) = chunks.send(chunk) {
                    // The thread is gone (it cannot fail, but if it did, `finish` reports it).
                    return returned.0;
                }
                spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(capacity))
            }
        }
    }

    /// PCR0, PCR1 and PCR2.
    pub(crate) fn finish(self) -> Result<[PcrValue; 3], ImageError> {
        let boot = self.boot.unwrap_or_else(|| extend_zero(self.image.clone()));
        let app = match self.app {
            App::Inline(context) => context,
            App::Worker { chunks, done, .. } => {
                drop(chunks);
                done.join().map_err(|_| ImageError::Io {
                    context: "hashing the application ramdisks".into(),
                    source: std::io::Error::other("the hashing thread failed"),
                })?
            }
        };
        Ok([extend_zero(self.image), boot, extend_zero(app)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(parts: &[&[u8]]) -> PcrValue {
        PcrValue::measure(&parts.concat())
    }

    #[test]
    fn pcrs_cover_the_documented_parts() {
        let m = Measurements::of_parts(b"K", b"C", &[b"R0", b"R1", b"R2"], None).unwrap();
        assert_eq!(m.pcr0, reference(&[b"K", b"C", b"R0", b"R1", b"R2"]));
        assert_eq!(m.pcr1, reference(&[b"K", b"C", b"R0"]));
        assert_eq!(m.pcr2, reference(&[b"R1", b"R2"]));
        assert_eq!(m.pcr8, None);
        let one = Measurements::of_parts(b"K", b"C", &[b"R0"], Some(b"cert")).unwrap();
        assert_eq!(one.pcr1, one.pcr0);
        assert_eq!(one.pcr2, PcrValue::measure(b""));
        assert_eq!(one.pcr8, Some(PcrValue::measure(b"cert")));
        assert_eq!(one.pcrs().len(), 4);
    }

    #[test]
    fn the_threaded_path_gives_the_same_values() {
        let big = vec![7u8; 9 * 1024 * 1024];
        let threaded = Measurements::of_parts(b"K", b"C", &[b"R0", &big, b"tail"], None).unwrap();
        assert_eq!(threaded.pcr2, reference(&[&big, b"tail"]));
        assert_eq!(
            threaded.pcr0,
            reference(&[b"K", b"C", b"R0", &big, b"tail"])
        );
    }
}
