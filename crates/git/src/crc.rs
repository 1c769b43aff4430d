//! The CRC-32 of pack entries (what `.idx` files record), with the hardware-accelerated
//! implementation of `crc32fast` (PCLMULQDQ on x86-64): serving a clone checks the CRC of every
//! entry it copies and computes the one it writes, so this runs over every byte sent.

/// A running CRC-32 (IEEE, as zlib's `crc32`).
#[derive(Clone, Default)]
pub(crate) struct Crc(crc32fast::Hasher);

impl Crc {
    pub(crate) fn new() -> Crc {
        Crc::default()
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The CRC of everything so far (the hasher keeps going).
    pub(crate) fn sum(&self) -> u32 {
        self.0.clone().finalize()
    }

    pub(crate) fn reset(&mut self) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_zlibs_crc32() {
        let mut crc = Crc::new();
        crc.update(b"The quick brown fox ");
        crc.update(b"jumps over the lazy dog");
        assert_eq!(crc.sum(), 0x414f_a339);
        crc.reset();
        assert_eq!(crc.sum(), 0);
    }
}
