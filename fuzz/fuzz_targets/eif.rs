#![no_main]
// Any bytes as an enclave image: the reader returns an image or an error, never panics, and an
// image it accepts is self-consistent: its sections tile the file after the header, and its
// measurements are those of its measured sections.
use eif::{HEADER_LEN, SECTION_HEADER_LEN, SectionKind};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(image) = eif::read(&mut &data[..], data.len() as u64) else {
        return;
    };
    assert_eq!(image.len, data.len() as u64);
    let mut at = HEADER_LEN as u64;
    let mut ramdisks = Vec::new();
    let mut kernel: &[u8] = &[];
    let mut cmdline: &[u8] = &[];
    for section in &image.sections {
        assert_eq!(section.offset, at);
        let start = (at as usize) + SECTION_HEADER_LEN;
        let body = &data[start..start + section.size as usize];
        match section.kind {
            SectionKind::Kernel => kernel = body,
            SectionKind::Cmdline => cmdline = body,
            SectionKind::Ramdisk => ramdisks.push(body),
            _ => {}
        }
        at = start as u64 + section.size;
    }
    assert_eq!(at, data.len() as u64);
    assert_eq!(image.cmdline, cmdline);
    let certificate = image.signature.as_ref().map(|s| s.certificate.as_ref());
    let expected = eif::Measurements::of_parts(kernel, cmdline, &ramdisks, certificate).unwrap();
    assert_eq!(image.measurements, expected);
});
