//! llama.cpp's CPU engine behind a small safe interface.
//!
//! - A [`Model`] is loaded from a [`MemoryFile`]: an anonymous file in memory (`memfd_create`),
//!   sealed against writes, that llama.cpp maps. The weights stay in their GGUF quantization as
//!   shipped and are never copied to a named file or converted; resident memory is the GGUF's
//!   size (shared by every context), plus each context's KV cache and work buffers.
//! - A [`Context`] evaluates token ids and gives the logits of the last one. Clearing it (and
//!   dropping it) overwrites its KV cache with zeros.
//! - Text reaches llama.cpp only through [`Model::tokenize`]; its log is discarded, except the
//!   first error line of a call (its cause), which becomes the error's message.
//! - The CPU kernels are linked in three builds, AVX2 and two AVX-512 ones; each process runs
//!   one: the AVX2 build unless [`use_cpu`] asked for another ([`Cpu`]).
//!
//! llama.cpp is built once per machine by `scripts/llama-cpp` (release v0.5.0, pinned, with the
//! patches in `llama/patches/`, which cut its tokenizer's tables' memory). This is
//! the workspace's only crate with unsafe code, all of it in the `ffi` module and the few calls
//! below, each with its reason.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

#[allow(unsafe_code)]
mod ffi {
    use std::ffi::{c_char, c_int};

    /// llama.cpp's model (opaque).
    #[repr(C)]
    pub(crate) struct LlamaModel {
        _private: [u8; 0],
    }

    /// llama.cpp's context (opaque).
    #[repr(C)]
    pub(crate) struct LlamaContext {
        _private: [u8; 0],
    }

    unsafe extern "C" {
        pub(crate) fn sv_init(cpu: i32) -> i32;
        pub(crate) fn sv_last_error() -> *const c_char;
        pub(crate) fn sv_clear_error();
        pub(crate) fn sv_model_load(
            fd: c_int,
            mmap: bool,
            repack: bool,
            vocab_only: bool,
        ) -> *mut LlamaModel;
        pub(crate) fn sv_model_free(model: *mut LlamaModel);
        pub(crate) fn sv_n_vocab(model: *const LlamaModel) -> i32;
        pub(crate) fn sv_model_size(model: *const LlamaModel) -> u64;
        pub(crate) fn sv_context(
            model: *mut LlamaModel,
            n_ctx: u32,
            threads: i32,
        ) -> *mut LlamaContext;
        pub(crate) fn sv_context_free(ctx: *mut LlamaContext);
        pub(crate) fn sv_n_ctx(ctx: *const LlamaContext) -> u32;
        pub(crate) fn sv_decode(ctx: *mut LlamaContext, ids: *const i32, n: i32) -> i32;
        pub(crate) fn sv_logits(ctx: *mut LlamaContext) -> *const f32;
        pub(crate) fn sv_clear(ctx: *mut LlamaContext) -> i32;
        pub(crate) fn sv_tokenize(
            model: *const LlamaModel,
            text: *const c_char,
            len: i32,
            ids: *mut i32,
            max: i32,
            special: bool,
        ) -> i32;
        pub(crate) fn sv_piece(
            model: *const LlamaModel,
            id: i32,
            buf: *mut c_char,
            size: i32,
        ) -> i32;
        pub(crate) fn sv_token_text(model: *const LlamaModel, id: i32) -> *const c_char;
        pub(crate) fn sv_token_attr(model: *const LlamaModel, id: i32) -> u32;
        pub(crate) fn sv_token_is_eog(model: *const LlamaModel, id: i32) -> bool;
        pub(crate) fn sv_quantize(
            input: *const c_char,
            output: *const c_char,
            ftype: i32,
            threads: i32,
        ) -> u32;
    }
}

mod cpu;

pub use cpu::{Cpu, cpu, use_cpu};

/// What went wrong in llama.cpp or around it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No build of the CPU kernels can run, or the one asked for cannot.
    #[error("the engine's CPU build: {0}")]
    Cpu(String),
    /// The anonymous memory file could not be made or written.
    #[error("the in-memory model file: {0}")]
    MemoryFile(#[from] std::io::Error),
    /// llama.cpp refused the model.
    #[error("llama.cpp cannot load the model: {0}")]
    Load(String),
    /// llama.cpp could not make a context.
    #[error("llama.cpp cannot make a context of {tokens} tokens: {message}")]
    Context {
        /// The context size asked for.
        tokens: u32,
        /// llama.cpp's error line.
        message: String,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    Token {
        /// The id.
        id: u32,
        /// The vocabulary's size.
        vocab: usize,
    },
    /// The ids would not fit the context.
    #[error("{evaluated} tokens evaluated and {more} more do not fit a context of {limit}")]
    Full {
        /// Ids already in the context.
        evaluated: usize,
        /// Ids asked for.
        more: usize,
        /// The context's size.
        limit: usize,
    },
    /// llama.cpp's quantizer failed.
    #[error("llama.cpp cannot quantize {input} to {kind}: {message}")]
    Quantize {
        /// The input file.
        input: String,
        /// The type asked for.
        kind: &'static str,
        /// llama.cpp's error line.
        message: String,
    },
    /// The tokenizer failed.
    #[error("tokenizing failed: {0}")]
    Tokenize(&'static str),
    /// Nothing to evaluate.
    #[error("no token ids to evaluate")]
    Empty,
    /// llama_decode failed.
    #[error("llama.cpp failed to evaluate ({code}): {message}")]
    Decode {
        /// llama_decode's status.
        code: i32,
        /// llama.cpp's error line.
        message: String,
    },
}

/// Chooses the CPU build (see [`cpu()`]) and initialises llama.cpp with it, once.
fn init() -> Result<Cpu, Error> {
    let cpu = cpu::cpu()?;
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        clear_error();
        #[allow(unsafe_code)]
        // SAFETY: sets the CPU build (an index the shim checks), llama.cpp's log callback (a
        // static function) and initialises its backend, once, before any other llama.cpp call.
        let code = unsafe { ffi::sv_init(cpu.index()) };
        if code == 0 {
            Ok(())
        } else {
            Err(format!("initialising llama.cpp: {}", last_error()))
        }
    })
    .clone()
    .map_err(Error::Load)?;
    Ok(cpu)
}

/// Forget llama.cpp's error line on this thread, before a call that may fail.
fn clear_error() {
    #[allow(unsafe_code)]
    // SAFETY: clears a thread-local buffer.
    unsafe {
        ffi::sv_clear_error()
    };
}

/// llama.cpp's error line on this thread (the first it logged since cleared, or what it
/// threw), cleared.
fn last_error() -> String {
    #[allow(unsafe_code)]
    // SAFETY: sv_last_error returns a NUL-terminated thread-local buffer that lives as long as
    // the thread; it is copied before anything can change it.
    let message = unsafe {
        let text = CStr::from_ptr(ffi::sv_last_error())
            .to_string_lossy()
            .trim()
            .to_owned();
        ffi::sv_clear_error();
        text
    };
    if message.is_empty() {
        "no detail given".to_owned()
    } else {
        message
    }
}

/// An anonymous file in memory (`memfd_create`): no name in any file system, gone when the last
/// descriptor and mapping are.
#[derive(Debug)]
pub struct MemoryFile {
    file: std::fs::File,
    len: u64,
}

impl MemoryFile {
    /// A new, empty file; `name` shows only in `/proc/self/fd` of this process.
    pub fn new(name: &str) -> Result<Self, Error> {
        let fd: OwnedFd =
            rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(std::io::Error::from)?;
        Ok(MemoryFile {
            file: std::fs::File::from(fd),
            len: 0,
        })
    }

    /// A file holding `bytes`.
    pub fn with(name: &str, bytes: &[u8]) -> Result<Self, Error> {
        let mut file = Self::new(name)?;
        file.write_all(bytes)?;
        Ok(file)
    }

    /// A reader of the contents from the start (it shares this file's position).
    pub fn reader(&self) -> std::io::Result<std::fs::File> {
        use std::io::Seek;
        let mut file = self.file.try_clone()?;
        file.seek(std::io::SeekFrom::Start(0))?;
        Ok(file)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Seal the contents: no more writes through any new descriptor or mapping, no resizing.
    /// The one writable mapping returned, made before sealing, is what zeroes the contents when
    /// the model is dropped (`F_SEAL_FUTURE_WRITE` lets it stay). On a kernel without that seal
    /// (before 5.1) the contents are sealed against every write and are not zeroed.
    fn seal(self) -> Result<(OwnedFd, Option<Wipe>), Error> {
        let fd = OwnedFd::from(self.file);
        let fixed = SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
        let wipe = Wipe::map(fd.as_fd(), self.len)?;
        match rustix::fs::fcntl_add_seals(fd.as_fd(), SealFlags::FUTURE_WRITE | fixed) {
            Ok(()) => Ok((fd, wipe)),
            Err(rustix::io::Errno::INVAL) => {
                drop(wipe);
                rustix::fs::fcntl_add_seals(fd.as_fd(), SealFlags::WRITE | fixed)
                    .map_err(std::io::Error::from)?;
                Ok((fd, None))
            }
            Err(e) => Err(std::io::Error::from(e).into()),
        }
    }
}

/// A writable shared mapping of a model's memory file: the model's weights are zeroed through
/// it when the model is dropped, before the pages go back to the kernel.
#[derive(Debug)]
struct Wipe {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

#[allow(unsafe_code)]
// SAFETY: the mapping is only written when the model is dropped, by the thread that drops it.
unsafe impl Send for Wipe {}
#[allow(unsafe_code)]
// SAFETY: nothing reads or writes through a shared reference.
unsafe impl Sync for Wipe {}

impl Wipe {
    fn map(fd: BorrowedFd<'_>, len: u64) -> Result<Option<Self>, Error> {
        let len = usize::try_from(len).map_err(|_| Error::Load("the model is too large".into()))?;
        if len == 0 {
            return Ok(None);
        }
        #[allow(unsafe_code)]
        // SAFETY: a new shared mapping of a file we own, of its length; nothing else is mapped
        // at the address the kernel chooses.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::Load("mmap returned NULL".into()))?;
        Ok(Some(Wipe { ptr, len }))
    }
}

impl Drop for Wipe {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: `ptr` maps `len` writable bytes that only this value owns; llama.cpp's own
        // mapping is gone (the model is freed first), and the mapping is removed right after.
        unsafe {
            std::ptr::write_bytes(self.ptr.as_ptr().cast::<u8>(), 0, self.len);
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            let _ = rustix::mm::munmap(self.ptr.as_ptr(), self.len);
        }
    }
}

impl Write for MemoryFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.len = self
            .len
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a model is loaded.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Map the file rather than copy it into llama.cpp's own buffers: the weights then take the
    /// file's memory only once. Default true.
    pub mmap: bool,
    /// Let llama.cpp repack tensors into its interleaved layouts where it has them (faster
    /// prompt processing for some types; the repacked tensors are copies). Default false.
    pub repack: bool,
    /// Load the tokenizer alone, without weights: such a model tokenizes and detokenizes but
    /// cannot make a context. Default false.
    pub vocab_only: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            mmap: true,
            repack: false,
            vocab_only: false,
        }
    }
}

/// A loaded model: read-only weights shared by every context.
#[derive(Debug)]
pub struct Model {
    ptr: NonNull<ffi::LlamaModel>,
    vocab: usize,
    size: u64,
    vocab_only: bool,
    /// Dropped after the model is freed (fields drop after `drop`): zeroes the weights.
    _wipe: Option<Wipe>,
}

#[allow(unsafe_code)]
// SAFETY: llama.cpp does not change a model after loading; contexts on several threads may use
// one model at once (its documented use for parallel sequences).
unsafe impl Send for Model {}
#[allow(unsafe_code)]
// SAFETY: as above: every method here only reads the model.
unsafe impl Sync for Model {}

impl Model {
    /// Load a GGUF from `file`, which is sealed first and closed once llama.cpp has it.
    pub fn load(file: MemoryFile, options: LoadOptions) -> Result<Self, Error> {
        init()?;
        let (fd, wipe) = file.seal()?;
        let fd = fd.into_raw_fd();
        clear_error();
        #[allow(unsafe_code)]
        // SAFETY: sv_model_load takes over `fd` (an open descriptor we own and give up here)
        // and closes it; it returns a model we own or NULL.
        let ptr =
            unsafe { ffi::sv_model_load(fd, options.mmap, options.repack, options.vocab_only) };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::Load(last_error()))?;
        #[allow(unsafe_code)]
        // SAFETY: `ptr` is a live model.
        let (vocab, size) = unsafe {
            (
                ffi::sv_n_vocab(ptr.as_ptr()),
                ffi::sv_model_size(ptr.as_ptr()),
            )
        };
        let model = Model {
            ptr,
            vocab: usize::try_from(vocab).unwrap_or(0),
            size,
            vocab_only: options.vocab_only,
            _wipe: wipe,
        };
        if model.vocab == 0 {
            return Err(Error::Load("the model has no vocabulary".into()));
        }
        Ok(model)
    }

    /// Tokens in the vocabulary (the length of the logits).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// The bytes of its weights.
    pub fn weights_size(&self) -> u64 {
        self.size
    }

    /// `text` as the model's token ids (llama.cpp's tokenizer, nothing added). With `special`,
    /// the text of a special token (`<|im_start|>`) becomes that token; without, it is text.
    pub fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, Error> {
        let len =
            i32::try_from(text.len()).map_err(|_| Error::Tokenize("the text is over 2 GiB"))?;
        let mut ids = vec![0i32; text.len().saturating_add(2)];
        loop {
            let max = i32::try_from(ids.len()).unwrap_or(i32::MAX);
            #[allow(unsafe_code)]
            // SAFETY: the model is live; `text` is `len` readable bytes; `ids` has room for
            // `max` ids. llama.cpp keeps neither pointer.
            let n = unsafe {
                ffi::sv_tokenize(
                    self.ptr.as_ptr(),
                    text.as_ptr().cast(),
                    len,
                    ids.as_mut_ptr(),
                    max,
                    special,
                )
            };
            match usize::try_from(n) {
                Ok(n) => {
                    ids.truncate(n);
                    return Ok(ids
                        .iter()
                        .map(|&id| u32::try_from(id).unwrap_or(u32::MAX))
                        .collect());
                }
                Err(_) if n == i32::MIN => return Err(Error::Tokenize("llama.cpp overflowed")),
                Err(_) => {
                    let needed = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
                    if needed <= ids.len() {
                        return Err(Error::Tokenize("llama.cpp gave no count"));
                    }
                    ids.resize(needed, 0);
                }
            }
        }
    }

    /// The bytes token `id` stands for, appended to `out` (a control token's are none).
    pub fn piece(&self, id: u32, out: &mut Vec<u8>) -> Result<(), Error> {
        let id = self.check(id)?;
        let mut buf = [0u8; 128];
        let size = i32::try_from(buf.len()).unwrap_or(0);
        #[allow(unsafe_code)]
        // SAFETY: the model is live, `id` is in the vocabulary, `buf` has `size` bytes.
        let n = unsafe { ffi::sv_piece(self.ptr.as_ptr(), id, buf.as_mut_ptr().cast(), size) };
        match usize::try_from(n) {
            Ok(n) => {
                out.extend_from_slice(buf.get(..n).unwrap_or_default());
                Ok(())
            }
            Err(_) => {
                let mut big = vec![0u8; usize::try_from(n.unsigned_abs()).unwrap_or(0)];
                let size = i32::try_from(big.len()).unwrap_or(0);
                #[allow(unsafe_code)]
                // SAFETY: as above, with a buffer of the size llama.cpp asked for.
                let n =
                    unsafe { ffi::sv_piece(self.ptr.as_ptr(), id, big.as_mut_ptr().cast(), size) };
                let n = usize::try_from(n).map_err(|_| Error::Tokenize("a token's text"))?;
                out.extend_from_slice(big.get(..n).unwrap_or_default());
                Ok(())
            }
        }
    }

    /// Token `id`'s text in the vocabulary (`<|im_start|>`, `Ġthe`).
    pub fn token_text(&self, id: u32) -> Result<String, Error> {
        let id = self.check(id)?;
        #[allow(unsafe_code)]
        // SAFETY: the model is live and `id` in its vocabulary; llama.cpp returns a
        // NUL-terminated string it owns for the model's life, copied at once.
        let text = unsafe {
            let ptr = ffi::sv_token_text(self.ptr.as_ptr(), id);
            if ptr.is_null() {
                return Ok(String::new());
            }
            CStr::from_ptr(ptr).to_string_lossy().into_owned()
        };
        Ok(text)
    }

    /// Whether token `id` is a control token (turn markers, BOS, EOS: never produced from
    /// ordinary text).
    pub fn is_control(&self, id: u32) -> bool {
        self.attr(id) & (1 << 3) != 0
    }

    /// Whether token `id` is user-defined: its text becomes that token wherever it appears,
    /// like a control token's (some vocabularies' turn markers are user-defined).
    pub fn is_user_defined(&self, id: u32) -> bool {
        self.attr(id) & (1 << 4) != 0
    }

    fn attr(&self, id: u32) -> u32 {
        let Ok(id) = self.check(id) else {
            return 0;
        };
        #[allow(unsafe_code)]
        // SAFETY: the model is live and `id` in its vocabulary.
        unsafe {
            ffi::sv_token_attr(self.ptr.as_ptr(), id)
        }
    }

    /// Whether token `id` ends generation (end of turn, end of text).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        let Ok(id) = self.check(id) else {
            return false;
        };
        #[allow(unsafe_code)]
        // SAFETY: the model is live and `id` in its vocabulary.
        unsafe {
            ffi::sv_token_is_eog(self.ptr.as_ptr(), id)
        }
    }

    fn check(&self, id: u32) -> Result<i32, Error> {
        match usize::try_from(id) {
            Ok(i) if i < self.vocab => Ok(i32::try_from(id).unwrap_or(0)),
            _ => Err(Error::Token {
                id,
                vocab: self.vocab,
            }),
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: every context holds an Arc of its model, so none is left when it drops.
        unsafe {
            ffi::sv_model_free(self.ptr.as_ptr())
        };
    }
}

/// One sequence's evaluation state: its KV cache, its logits, its work buffers.
#[derive(Debug)]
pub struct Context {
    ptr: NonNull<ffi::LlamaContext>,
    model: Arc<Model>,
    limit: usize,
    evaluated: usize,
}

#[allow(unsafe_code)]
// SAFETY: a context is used by one thread at a time (every method takes `&mut self` or drops
// it); llama.cpp keeps no thread-affine state in it.
unsafe impl Send for Context {}

impl Context {
    /// A context of `tokens` positions evaluated on `threads` threads.
    pub fn new(model: &Arc<Model>, tokens: u32, threads: usize) -> Result<Self, Error> {
        if tokens == 0 {
            return Err(Error::Context {
                tokens,
                message: "a context needs at least one position".into(),
            });
        }
        if model.vocab_only {
            return Err(Error::Context {
                tokens,
                message: "the model was loaded without its weights (vocab_only)".into(),
            });
        }
        let threads = i32::try_from(threads.max(1)).unwrap_or(1);
        clear_error();
        #[allow(unsafe_code)]
        // SAFETY: the model is live (we hold an Arc) and outlives the context.
        let ptr = unsafe { ffi::sv_context(model.ptr.as_ptr(), tokens, threads) };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::Context {
            tokens,
            message: last_error(),
        })?;
        #[allow(unsafe_code)]
        // SAFETY: `ptr` is a live context.
        let limit = unsafe { ffi::sv_n_ctx(ptr.as_ptr()) };
        // llama.cpp rounds the context up, but one evaluation holds at most the batch asked for.
        let limit = limit.min(tokens);
        Ok(Context {
            ptr,
            model: Arc::clone(model),
            limit: usize::try_from(limit).unwrap_or(0),
            evaluated: 0,
        })
    }

    /// Positions in the context.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Ids evaluated since the last clear.
    pub fn evaluated(&self) -> usize {
        self.evaluated
    }

    /// Evaluate `ids` after those already evaluated; the logits of the last one, one per
    /// vocabulary token.
    pub fn evaluate(&mut self, ids: &[u32]) -> Result<&[f32], Error> {
        if ids.is_empty() {
            return Err(Error::Empty);
        }
        let vocab = self.model.vocab;
        if let Some(&id) = ids
            .iter()
            .find(|&&id| usize::try_from(id).map_or(true, |i| i >= vocab))
        {
            return Err(Error::Token { id, vocab });
        }
        if self.evaluated.saturating_add(ids.len()) > self.limit {
            return Err(Error::Full {
                evaluated: self.evaluated,
                more: ids.len(),
                limit: self.limit,
            });
        }
        // Every id is below the vocabulary's size, itself an i32.
        let ids: Vec<i32> = ids
            .iter()
            .map(|&id| i32::try_from(id).unwrap_or(0))
            .collect();
        let n = i32::try_from(ids.len()).unwrap_or(i32::MAX);
        clear_error();
        #[allow(unsafe_code)]
        // SAFETY: the context is live and ours; `ids` holds `n` valid ids and outlives the call
        // (llama.cpp does not keep the pointer).
        let code = unsafe { ffi::sv_decode(self.ptr.as_ptr(), ids.as_ptr(), n) };
        if code != 0 {
            // A failed evaluation leaves the cache in an unknown state: start again.
            self.clear();
            return Err(Error::Decode {
                code,
                message: last_error(),
            });
        }
        self.evaluated = self.evaluated.saturating_add(ids.len());
        clear_error();
        #[allow(unsafe_code)]
        // SAFETY: after a successful decode whose last id requested output, llama.cpp's logits
        // buffer holds `vocab` floats for it, unchanged until the next call on this context,
        // which the returned borrow of `self` prevents.
        let logits = unsafe {
            let ptr = ffi::sv_logits(self.ptr.as_ptr());
            if ptr.is_null() {
                return Err(Error::Decode {
                    code: -1,
                    message: last_error(),
                });
            }
            std::slice::from_raw_parts(ptr, vocab)
        };
        Ok(logits)
    }

    /// Forget every id evaluated, overwriting the KV cache with zeros.
    pub fn clear(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: the context is live and ours. (It fails only if llama.cpp throws, which its
        // clearing code does not; a context is never reused after a failed evaluation anyway.)
        unsafe {
            ffi::sv_clear(self.ptr.as_ptr());
        }
        self.evaluated = 0;
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        self.clear();
        #[allow(unsafe_code)]
        // SAFETY: the context is live, ours, and not used again.
        unsafe {
            ffi::sv_context_free(self.ptr.as_ptr())
        };
    }
}

/// The GGUF file types [`quantize`] writes (llama.cpp's `llama_ftype`): every matrix in that
/// type where its shape allows, llama.cpp's own choices for the rest (the `_m` mixes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// 4-bit, one scale per 32 weights.
    Q4_0,
    /// 4-bit, a scale and a minimum per 32 weights.
    Q4_1,
    /// 8-bit, one scale per 32 weights.
    Q8_0,
    /// 4-bit K-quant mix (some tensors in 6-bit).
    Q4KM,
    /// 5-bit K-quant mix.
    Q5KM,
    /// 6-bit K-quant.
    Q6K,
}

impl FileType {
    /// Every type, in the order above.
    pub const ALL: [FileType; 6] = [
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q8_0,
        FileType::Q4KM,
        FileType::Q5KM,
        FileType::Q6K,
    ];

    /// llama.cpp's lower-case name (`q4_k_m`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::Q4_0 => "q4_0",
            FileType::Q4_1 => "q4_1",
            FileType::Q8_0 => "q8_0",
            FileType::Q4KM => "q4_k_m",
            FileType::Q5KM => "q5_k_m",
            FileType::Q6K => "q6_k",
        }
    }

    fn ftype(self) -> i32 {
        match self {
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q4KM => 15,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
        }
    }
}

/// Write the GGUF file `input` requantized by llama.cpp's quantizer to `kind`, as `output`: a
/// tool for preparing models and tests, on files the caller names; nothing in the enclave uses
/// it.
pub fn quantize(
    input: &std::path::Path,
    output: &std::path::Path,
    kind: FileType,
    threads: usize,
) -> Result<(), Error> {
    init()?;
    let fail = |message: String| Error::Quantize {
        input: input.display().to_string(),
        kind: kind.as_str(),
        message,
    };
    let path = |p: &std::path::Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| fail("a path contains a NUL byte".into()))
    };
    let (c_input, c_output) = (path(input)?, path(output)?);
    let threads = i32::try_from(threads.max(1)).unwrap_or(1);
    clear_error();
    #[allow(unsafe_code)]
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let status =
        unsafe { ffi::sv_quantize(c_input.as_ptr(), c_output.as_ptr(), kind.ftype(), threads) };
    if status == 0 {
        Ok(())
    } else {
        Err(fail(last_error()))
    }
}
