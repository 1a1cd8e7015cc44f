//! Codes of a few bits packed into bytes, from the low bit of each byte.

/// Packs codes from the low bit of each byte.
pub(super) struct BitWriter<'a> {
    body: &'a mut Vec<u8>,
    start: usize,
    bit: usize,
}

impl<'a> BitWriter<'a> {
    pub(super) fn new(body: &'a mut Vec<u8>, total_bits: usize) -> Self {
        let start = body.len();
        body.resize(start + total_bits.div_ceil(8), 0);
        Self {
            body,
            start,
            bit: 0,
        }
    }

    pub(super) fn put(&mut self, code: u32, bits: u32) {
        for b in 0..bits {
            if code >> b & 1 == 1 {
                self.body[self.start + self.bit / 8] |= 1 << (self.bit % 8);
            }
            self.bit += 1;
        }
    }
}

/// Reads what [`BitWriter`] packed; the caller checked the length.
pub(super) struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub(super) fn take(&mut self, bits: u32) -> u32 {
        let mut code = 0;
        for b in 0..bits {
            let bit = self.bytes[self.at / 8] >> (self.at % 8) & 1;
            code |= u32::from(bit) << b;
            self.at += 1;
        }
        code
    }
}
