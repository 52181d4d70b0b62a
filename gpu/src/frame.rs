//! Frame analysis for Video Streams, the CPU reference of the frame kernels: the luma
//! histogram of a frame, motion between consecutive frames, and scene changes. Everything is
//! integer (counts and sums of 8-bit luma), so the kernels (`kernels/luma_histogram.wgsl`,
//! `kernels/motion.wgsl`), which add in whatever order their threads run, give the same
//! answer bit for bit. Frames are the luma plane only (Y of YUV, 8 bits, rows packed with no
//! padding), as a decoder gives it.

use std::fmt;

/// Bins of a luma histogram: one per 8-bit value.
pub const BINS: usize = 256;

/// Pixels in a frame at most (a frame's counts fit 32 bits; 16K × 16K is 2^28).
pub const PIXELS_MAX: usize = 1 << 30;

/// Why a frame cannot be analysed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`PIXELS_MAX`] pixels.
    TooLarge { pixels: usize },
    /// Two frames compared have different sizes.
    SizeMismatch { previous: usize, next: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { pixels } => write!(f, "a frame of {pixels} pixels (at most {PIXELS_MAX})"),
            FrameError::SizeMismatch { previous, next } => {
                write!(f, "frames of {previous} and {next} pixels cannot be compared")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A frame's luma histogram: pixels per luma value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LumaHistogram {
    pub bins: [u32; BINS],
}

impl LumaHistogram {
    pub fn pixels(&self) -> u64 {
        self.bins.iter().map(|count| u64::from(*count)).sum()
    }

    /// The mean luma in thousandths (0 to 255,000), rounded down; `None` for no pixels.
    pub fn mean_luma_milli(&self) -> Option<u64> {
        let pixels = self.pixels();
        let total: u64 =
            self.bins.iter().enumerate().map(|(luma, count)| luma as u64 * u64::from(*count)).sum();
        (pixels > 0).then(|| total * 1000 / pixels)
    }
}

pub fn luma_histogram(luma: &[u8]) -> Result<LumaHistogram, FrameError> {
    if luma.len() > PIXELS_MAX {
        return Err(FrameError::TooLarge { pixels: luma.len() });
    }
    let mut bins = [0u32; BINS];
    for pixel in luma {
        bins[usize::from(*pixel)] += 1;
    }
    Ok(LumaHistogram { bins })
}

/// Motion between two frames: the sum of absolute luma differences, and the pixels that
/// changed by more than the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Motion {
    pub sad: u64,
    pub changed: u32,
    pub pixels: u32,
}

impl Motion {
    /// The mean absolute difference in thousandths of a luma step (0 to 255,000).
    pub fn mean_difference_milli(&self) -> u64 {
        if self.pixels == 0 {
            return 0;
        }
        self.sad * 1000 / u64::from(self.pixels)
    }

    /// The share of pixels that changed, in thousandths.
    pub fn changed_permille(&self) -> u32 {
        if self.pixels == 0 {
            return 0;
        }
        (u64::from(self.changed) * 1000 / u64::from(self.pixels)) as u32
    }
}

pub fn motion(previous: &[u8], next: &[u8], threshold: u8) -> Result<Motion, FrameError> {
    check_pair(previous, next)?;
    let (mut sad, mut changed) = (0u64, 0u32);
    for (a, b) in previous.iter().zip(next) {
        let difference = a.abs_diff(*b);
        sad += u64::from(difference);
        changed += u32::from(difference > threshold);
    }
    Ok(Motion { sad, changed, pixels: previous.len() as u32 })
}

pub(crate) fn check_pair(previous: &[u8], next: &[u8]) -> Result<(), FrameError> {
    if previous.len() != next.len() {
        return Err(FrameError::SizeMismatch { previous: previous.len(), next: next.len() });
    }
    if previous.len() > PIXELS_MAX {
        return Err(FrameError::TooLarge { pixels: previous.len() });
    }
    Ok(())
}

/// How far apart two frames' histograms are: the L1 distance of their bins, as a share of
/// the largest it can be (every pixel moved: twice the pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SceneDistance {
    pub distance: u64,
    pub pixels: u64,
}

impl SceneDistance {
    pub fn permille(&self) -> u64 {
        if self.pixels == 0 {
            return 0;
        }
        self.distance * 1000 / (2 * self.pixels)
    }

    /// A cut: the histograms differ by at least `threshold_permille` of all they could.
    /// Histograms ignore where pixels are, so a pan over a uniform scene is not a cut, and a
    /// fade crosses the threshold once, at some frame of it.
    pub fn is_cut(&self, threshold_permille: u64) -> bool {
        self.pixels > 0 && self.distance * 1000 >= threshold_permille * 2 * self.pixels
    }
}

/// The distance between consecutive frames' histograms (of frames of the same size).
pub fn scene_distance(previous: &LumaHistogram, next: &LumaHistogram) -> Result<SceneDistance, FrameError> {
    let (pixels, next_pixels) = (previous.pixels(), next.pixels());
    if pixels != next_pixels {
        return Err(FrameError::SizeMismatch { previous: pixels as usize, next: next_pixels as usize });
    }
    let distance = previous.bins.iter().zip(&next.bins).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
    Ok(SceneDistance { distance, pixels })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_flat_frame_and_a_cut() {
        let dark = vec![16u8; 64 * 36];
        let bright = vec![235u8; 64 * 36];
        let histogram = luma_histogram(&dark).unwrap();
        assert_eq!(histogram.bins[16], 64 * 36);
        assert_eq!(histogram.mean_luma_milli(), Some(16_000));
        let moved = motion(&dark, &bright, 10).unwrap();
        assert_eq!(moved, Motion { sad: 219 * 64 * 36, changed: 64 * 36, pixels: 64 * 36 });
        assert_eq!(moved.mean_difference_milli(), 219_000);
        assert_eq!(moved.changed_permille(), 1000);
        let cut = scene_distance(&histogram, &luma_histogram(&bright).unwrap()).unwrap();
        assert_eq!(cut.permille(), 1000);
        assert!(cut.is_cut(400));
        assert!(motion(&dark, &bright[1..], 10).is_err());
        assert_eq!(luma_histogram(&[]).unwrap().mean_luma_milli(), None);
    }

    #[test]
    fn noise_is_motion_but_not_a_cut() {
        // A gradient, then the same gradient with ±2 of noise: small motion, no cut.
        let frame: Vec<u8> = (0..10_000u32).map(|index| (index % 200) as u8 + 20).collect();
        let noisy: Vec<u8> = frame
            .iter()
            .enumerate()
            .map(|(index, luma)| if index % 3 == 0 { luma + 2 } else { luma - 1 })
            .collect();
        let moved = motion(&frame, &noisy, 4).unwrap();
        assert_eq!(moved.changed, 0);
        assert!(moved.sad > 0);
        let distance =
            scene_distance(&luma_histogram(&frame).unwrap(), &luma_histogram(&noisy).unwrap()).unwrap();
        assert!(!distance.is_cut(400), "{}", distance.permille());
    }

    proptest! {
        #[test]
        fn motion_is_symmetric_and_zero_on_itself(frame in proptest::collection::vec(any::<u8>(), 0..2000), seed: u8) {
            let other: Vec<u8> = frame.iter().map(|luma| luma.wrapping_mul(seed)).collect();
            prop_assert_eq!(motion(&frame, &other, 5).unwrap(), motion(&other, &frame, 5).unwrap());
            prop_assert_eq!(motion(&frame, &frame, 0).unwrap().sad, 0);
            let histogram = luma_histogram(&frame).unwrap();
            prop_assert_eq!(histogram.pixels(), frame.len() as u64);
            prop_assert_eq!(scene_distance(&histogram, &histogram).unwrap().distance, 0);
        }
    }
}
