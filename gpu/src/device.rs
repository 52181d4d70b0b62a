//! The wgpu plumbing (feature `device`): one adapter and queue, and the kernels' pipelines.
//! Each kernel is a WGSL file in `kernels/` beside the CPU reference it must match bit for bit
//! (`agg`); the tests compare the two on random inputs. In CI the adapter is Mesa's lavapipe
//! (a Vulkan implementation on the CPU), found like any other.

use std::sync::mpsc;

use wgpu::util::DeviceExt;

use crate::agg::distinct::REGISTERS;
use crate::agg::{MinMax, Sum};
use crate::frame::{self, FrameError, LumaHistogram, Motion, BINS};

/// Why a kernel could not run.
#[derive(Debug)]
pub enum GpuError {
    Device(String),
    Run(String),
    Frame(FrameError),
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuError::Device(why) => write!(f, "opening the GPU device: {why}"),
            GpuError::Run(why) => write!(f, "running a kernel: {why}"),
            GpuError::Frame(why) => write!(f, "analysing a frame: {why}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// Workgroups dispatched at most; threads then stride over the batch.
const GROUPS_MAX: u32 = 1024;
const GROUP_THREADS: u32 = 256;
/// Events per dispatch of `pane_sum` (see the kernel).
const PANE_SUM_EVENTS_MAX: usize = 65_535;

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: String,
    /// A CPU adapter (Mesa's lavapipe): correct, but no faster than the CPU runner.
    software: bool,
    distinct: wgpu::ComputePipeline,
    pane_sum: wgpu::ComputePipeline,
    pane_min_high: wgpu::ComputePipeline,
    pane_min_low: wgpu::ComputePipeline,
    luma_histogram: wgpu::ComputePipeline,
    motion: wgpu::ComputePipeline,
}

fn pipeline(device: &wgpu::Device, label: &str, source: &str) -> wgpu::ComputePipeline {
    pipeline_at(device, label, source, "main")
}

fn pipeline_at(device: &wgpu::Device, label: &str, source: &str, entry: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// What a kernel binds: read-only inputs, its output (zeroed, or these bytes), and the
/// batch's value count.
struct Binding<'a> {
    inputs: &'a [&'a [u8]],
    output_bytes: usize,
    initial: Option<&'a [u8]>,
    count: u32,
}

impl Gpu {
    /// The first adapter wgpu finds (any backend this build has: Vulkan); `None` when there is
    /// none, and the caller runs on the CPU.
    pub fn open() -> Result<Option<Gpu>, GpuError> {
        let instance = wgpu::Instance::new(&wgpu::InstanceDescriptor::from_env_or_default());
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        let Ok(adapter) = pollster::block_on(instance.request_adapter(&options)) else {
            return Ok(None);
        };
        let info = adapter.get_info();
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("millrace-gpu"),
            required_features: wgpu::Features::empty(),
            required_limits: wgpu::Limits::downlevel_defaults().using_resolution(adapter.limits()),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&descriptor))
            .map_err(|error| GpuError::Device(error.to_string()))?;
        let distinct = pipeline(&device, "distinct", include_str!("kernels/distinct.wgsl"));
        let pane_sum = pipeline(&device, "pane_sum", include_str!("kernels/pane_sum.wgsl"));
        let minmax = include_str!("kernels/pane_minmax.wgsl");
        let pane_min_high = pipeline_at(&device, "pane_minmax", minmax, "high");
        let pane_min_low = pipeline_at(&device, "pane_minmax", minmax, "low");
        let luma_histogram = pipeline(&device, "luma_histogram", include_str!("kernels/luma_histogram.wgsl"));
        let motion = pipeline(&device, "motion", include_str!("kernels/motion.wgsl"));
        let adapter = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        Ok(Some(Gpu {
            device,
            queue,
            adapter,
            software: info.device_type == wgpu::DeviceType::Cpu,
            distinct,
            pane_sum,
            pane_min_high,
            pane_min_low,
            luma_histogram,
            motion,
        }))
    }

    /// The adapter, in words (for the log line that says which device runs the kernels).
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// Whether the adapter is a CPU rasterizer (lavapipe) rather than a GPU.
    pub fn is_software(&self) -> bool {
        self.software
    }

    /// The COUNT DISTINCT registers of `values` (what [`crate::agg::distinct::registers_of_i64`]
    /// computes on the CPU).
    pub fn distinct_registers(&self, values: &[i64]) -> Result<Box<[u8; REGISTERS]>, GpuError> {
        let mut registers = Box::new([0u8; REGISTERS]);
        if values.is_empty() {
            return Ok(registers);
        }
        let words: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
        let count =
            u32::try_from(values.len()).map_err(|_| GpuError::Run("a batch of 2^32 values".into()))?;
        let binding = Binding { inputs: &[&words], output_bytes: REGISTERS * 4, initial: None, count };
        let output = self.run(&self.distinct, &binding)?;
        for (register, word) in registers.iter_mut().zip(output.chunks_exact(4)) {
            let rank = u32::from_le_bytes(word.try_into().expect("4 bytes"));
            *register = u8::try_from(rank).map_err(|_| GpuError::Run(format!("a rank of {rank}")))?;
        }
        Ok(registers)
    }

    /// COUNT and SUM of `values` per pane (`panes[i]` is the pane of `values[i]`, below
    /// `pane_count`): what folding each value into its pane's [`Sum`] computes.
    pub fn pane_sums(&self, panes: &[u32], values: &[i64], pane_count: usize) -> Result<Vec<Sum>, GpuError> {
        if panes.len() != values.len() || panes.iter().any(|pane| *pane as usize >= pane_count) {
            return Err(GpuError::Run("every value needs a pane below the pane count".into()));
        }
        let mut sums = vec![Sum::default(); pane_count];
        // At most 65,535 events a dispatch, so that no 16-bit limb's counter wraps.
        for (panes, values) in panes.chunks(PANE_SUM_EVENTS_MAX).zip(values.chunks(PANE_SUM_EVENTS_MAX)) {
            let pane_words: Vec<u8> = panes.iter().flat_map(|pane| pane.to_le_bytes()).collect();
            let value_words: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
            let binding = Binding {
                inputs: &[&pane_words, &value_words],
                output_bytes: pane_count * 5 * 4,
                initial: None,
                count: values.len() as u32,
            };
            let output = self.run(&self.pane_sum, &binding)?;
            let words: Vec<u32> = output
                .chunks_exact(4)
                .map(|word| u32::from_le_bytes(word.try_into().expect("4 bytes")))
                .collect();
            for (sum, pane) in sums.iter_mut().zip(words.chunks_exact(5)) {
                let count = u64::from(pane[0]);
                if count == 0 {
                    continue;
                }
                let offset: i128 = (0..4).map(|limb| i128::from(pane[1 + limb]) << (16 * limb)).sum();
                sum.add_partial(offset - (i128::from(count) << 63), count);
            }
        }
        Ok(sums)
    }

    /// MIN and MAX of `values` per pane (as [`Self::pane_sums`] takes them): what folding each
    /// value into its pane's [`MinMax`] computes.
    pub fn pane_extremes(
        &self,
        panes: &[u32],
        values: &[i64],
        pane_count: usize,
    ) -> Result<Vec<MinMax>, GpuError> {
        if panes.len() != values.len() || panes.iter().any(|pane| *pane as usize >= pane_count) {
            return Err(GpuError::Run("every value needs a pane below the pane count".into()));
        }
        let count =
            u32::try_from(values.len()).map_err(|_| GpuError::Run("a batch of 2^32 values".into()))?;
        let pane_words: Vec<u8> = panes.iter().flat_map(|pane| pane.to_le_bytes()).collect();
        let value_words: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
        let start: Vec<u8> = [0u32, u32::MAX, u32::MAX, 0, 0]
            .iter()
            .cycle()
            .take(pane_count * 5)
            .flat_map(|word| word.to_le_bytes())
            .collect();
        let mut binding = Binding {
            inputs: &[&pane_words, &value_words],
            output_bytes: pane_count * 5 * 4,
            initial: Some(&start),
            count,
        };
        let highs = self.run(&self.pane_min_high, &binding)?;
        binding.initial = Some(&highs);
        let output = self.run(&self.pane_min_low, &binding)?;
        let words: Vec<u32> = output
            .chunks_exact(4)
            .map(|word| u32::from_le_bytes(word.try_into().expect("4 bytes")))
            .collect();
        Ok(words
            .chunks_exact(5)
            .map(|pane| {
                let key = |high: u32, low: u32| (u64::from(high) << 32) | u64::from(low);
                let mut extremes = MinMax::default();
                extremes.add_partial(key(pane[1], pane[2]), key(pane[3], pane[4]), u64::from(pane[0]));
                extremes
            })
            .collect())
    }

    /// The luma histogram of a frame's luma plane (what [`frame::luma_histogram`] computes).
    pub fn luma_histogram(&self, luma: &[u8]) -> Result<LumaHistogram, GpuError> {
        if luma.len() > frame::PIXELS_MAX {
            return Err(GpuError::Frame(FrameError::TooLarge { pixels: luma.len() }));
        }
        let mut bins = [0u32; BINS];
        if luma.is_empty() {
            return Ok(LumaHistogram { bins });
        }
        let binding = Binding {
            inputs: &[&packed(luma)],
            output_bytes: BINS * 4,
            initial: None,
            count: luma.len() as u32,
        };
        let output = self.run(&self.luma_histogram, &binding)?;
        for (bin, word) in bins.iter_mut().zip(output.chunks_exact(4)) {
            *bin = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        }
        Ok(LumaHistogram { bins })
    }

    /// Motion between two frames' luma planes (what [`frame::motion`] computes).
    pub fn motion(&self, previous: &[u8], next: &[u8], threshold: u8) -> Result<Motion, GpuError> {
        frame::check_pair(previous, next).map_err(GpuError::Frame)?;
        let pixels = previous.len() as u32;
        if pixels == 0 {
            return Ok(Motion { sad: 0, changed: 0, pixels });
        }
        let params = u32::from(threshold).to_le_bytes();
        let binding = Binding {
            inputs: &[&packed(previous), &packed(next), &params],
            output_bytes: 4 * 4,
            initial: None,
            count: pixels,
        };
        let output = self.run(&self.motion, &binding)?;
        let word =
            |index: usize| u32::from_le_bytes(output[4 * index..4 * index + 4].try_into().expect("4 bytes"));
        Ok(Motion { sad: u64::from(word(0)) | (u64::from(word(1)) << 32), changed: word(2), pixels })
    }

    /// Runs `pipeline` once over a batch and reads its output back.
    fn run(&self, pipeline: &wgpu::ComputePipeline, binding: &Binding<'_>) -> Result<Vec<u8>, GpuError> {
        let mut buffers: Vec<wgpu::Buffer> = binding
            .inputs
            .iter()
            .map(|contents| {
                self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents,
                    usage: wgpu::BufferUsages::STORAGE,
                })
            })
            .collect();
        let size = binding.output_bytes as u64;
        let zeros;
        let initial = match binding.initial {
            Some(initial) => initial,
            None => {
                zeros = vec![0u8; binding.output_bytes];
                &zeros
            }
        };
        let output = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("output"),
            contents: initial,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        buffers.push(output);
        buffers.push(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("batch"),
            contents: &binding.count.to_le_bytes(),
            usage: wgpu::BufferUsages::UNIFORM,
        }));
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(index, buffer)| wgpu::BindGroupEntry {
                binding: index as u32,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bindings = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bindings, &[]);
            pass.dispatch_workgroups(binding.count.div_ceil(GROUP_THREADS).clamp(1, GROUPS_MAX), 1, 1);
        }
        let output = &buffers[binding.inputs.len()];
        encoder.copy_buffer_to_buffer(output, 0, &readback, 0, size);
        self.queue.submit([encoder.finish()]);
        let (done, finished) = mpsc::channel();
        readback.slice(..).map_async(wgpu::MapMode::Read, move |outcome| {
            let _ = done.send(outcome);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|error| GpuError::Run(error.to_string()))?;
        finished
            .recv()
            .map_err(|_| GpuError::Run("the readback was dropped".into()))?
            .map_err(|error| GpuError::Run(error.to_string()))?;
        let bytes = readback.slice(..).get_mapped_range().to_vec();
        readback.unmap();
        Ok(bytes)
    }
}
/// Bytes packed four to a little-endian word (the last word padded with zeros; the kernels
/// count pixels, not words, so the padding is never read as a pixel).
fn packed(bytes: &[u8]) -> Vec<u8> {
    let mut words = bytes.to_vec();
    words.resize(bytes.len().div_ceil(4) * 4, 0);
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::distinct::registers_of_i64;
    use proptest::prelude::*;

    /// The device, or `None` (and a note) where there is none; with `MILLRACE_GPU_REQUIRED=1`
    /// (the test command sets it, with lavapipe installed) a missing adapter fails the test.
    fn gpu() -> Option<&'static Gpu> {
        static GPU: std::sync::OnceLock<Option<Gpu>> = std::sync::OnceLock::new();
        let gpu = GPU.get_or_init(|| Gpu::open().expect("opening the adapter")).as_ref();
        if gpu.is_none() {
            assert!(
                std::env::var("MILLRACE_GPU_REQUIRED").is_err(),
                "MILLRACE_GPU_REQUIRED is set and wgpu found no adapter"
            );
            eprintln!("no GPU adapter: the kernels were not run");
        }
        gpu
    }

    #[test]
    fn the_kernel_runs_on_an_adapter() {
        let Some(gpu) = gpu() else { return };
        eprintln!("adapter: {}", gpu.adapter());
        let values: Vec<i64> = (0..300_000).collect();
        assert_eq!(*gpu.distinct_registers(&values).unwrap(), *registers_of_i64(&values));
        assert_eq!(*gpu.distinct_registers(&[]).unwrap(), [0u8; REGISTERS]);
    }

    #[test]
    fn pane_sums_of_extreme_values_over_several_dispatches() {
        let Some(gpu) = gpu() else { return };
        let values: Vec<i64> = (0..150_000i64)
            .map(|i| match i % 4 {
                0 => i64::MAX,
                1 => i64::MIN,
                2 => -i,
                _ => i * 1_000_003,
            })
            .collect();
        let panes: Vec<u32> = (0..values.len() as u32).map(|i| i % 3).collect();
        let mut expected = vec![Sum::default(); 4];
        for (pane, value) in panes.iter().zip(&values) {
            expected[*pane as usize].add_i64(*value);
        }
        assert_eq!(gpu.pane_sums(&panes, &values, 4).unwrap(), expected);
        assert!(gpu.pane_sums(&[4], &[1], 4).is_err());
    }

    #[test]
    fn pane_extremes_of_extreme_values() {
        let Some(gpu) = gpu() else { return };
        let values = [i64::MAX, i64::MIN, -1, 0, 1, 1 << 32, (1 << 32) - 1, -(1 << 32), 7];
        let panes = [0u32, 0, 1, 1, 1, 2, 2, 2, 2];
        let mut expected = vec![MinMax::default(); 4];
        for (pane, value) in panes.iter().zip(&values) {
            expected[*pane as usize].add_i64(*value);
        }
        assert_eq!(gpu.pane_extremes(&panes, &values, 4).unwrap(), expected);
        assert_eq!(expected[3], MinMax::default());
    }

    #[test]
    fn frame_kernels_on_a_full_hd_frame() {
        let Some(gpu) = gpu() else { return };
        // A 1920x1080 gradient with a moving bright square: every bin and a real SAD.
        let previous: Vec<u8> =
            (0..1920 * 1080u32).map(|index| ((index % 1920) * 255 / 1919) as u8).collect();
        let mut next = previous.clone();
        for row in 100..300usize {
            next[row * 1920 + 400..row * 1920 + 600].fill(255);
        }
        assert_eq!(gpu.luma_histogram(&previous).unwrap(), frame::luma_histogram(&previous).unwrap());
        assert_eq!(gpu.motion(&previous, &next, 8).unwrap(), frame::motion(&previous, &next, 8).unwrap());
        // A SAD past 2^32: 2^25 pixels that each moved by 255 (8.5e9), the carry exercised.
        let black = vec![0u8; 1 << 25];
        let white = vec![255u8; 1 << 25];
        let moved = gpu.motion(&black, &white, 0).unwrap();
        assert_eq!(moved, frame::motion(&black, &white, 0).unwrap());
        assert!(moved.sad > u64::from(u32::MAX));
        assert!(matches!(
            gpu.motion(&black, &white[1..], 0),
            Err(GpuError::Frame(FrameError::SizeMismatch { .. }))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn gpu_frame_analysis_is_the_cpu_reference_bit_for_bit(
            previous in proptest::collection::vec(any::<u8>(), 0..20_000),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
            threshold: u8,
        ) {
            let Some(gpu) = gpu() else { return Ok(()) };
            let next: Vec<u8> = previous
                .iter()
                .enumerate()
                .map(|(index, luma)| luma.wrapping_add(noise.get(index % noise.len().max(1)).copied().unwrap_or(0)))
                .collect();
            prop_assert_eq!(gpu.luma_histogram(&previous).unwrap(), frame::luma_histogram(&previous).unwrap());
            prop_assert_eq!(gpu.motion(&previous, &next, threshold).unwrap(), frame::motion(&previous, &next, threshold).unwrap());
        }
        #[test]
        fn gpu_pane_extremes_are_the_cpu_extremes_bit_for_bit(
            events in proptest::collection::vec((0u32..40, prop_oneof![any::<i64>(), -1000i64..1000]), 0..3000),
        ) {
            let Some(gpu) = gpu() else { return Ok(()) };
            let (panes, values): (Vec<u32>, Vec<i64>) = events.into_iter().unzip();
            let mut expected = vec![MinMax::default(); 40];
            for (pane, value) in panes.iter().zip(&values) {
                expected[*pane as usize].add_i64(*value);
            }
            prop_assert_eq!(gpu.pane_extremes(&panes, &values, 40).unwrap(), expected);
        }

        #[test]
        fn gpu_pane_sums_are_the_cpu_sums_bit_for_bit(
            events in proptest::collection::vec((0u32..40, any::<i64>()), 0..3000),
        ) {
            let Some(gpu) = gpu() else { return Ok(()) };
            let (panes, values): (Vec<u32>, Vec<i64>) = events.into_iter().unzip();
            let mut expected = vec![Sum::default(); 40];
            for (pane, value) in panes.iter().zip(&values) {
                expected[*pane as usize].add_i64(*value);
            }
            prop_assert_eq!(gpu.pane_sums(&panes, &values, 40).unwrap(), expected);
        }

        #[test]
        fn gpu_registers_are_the_cpu_registers_bit_for_bit(
            values in proptest::collection::vec(any::<i64>(), 0..5000),
            repeats in 1usize..3,
        ) {
            let Some(gpu) = gpu() else { return Ok(()) };
            let values: Vec<i64> = values.iter().cycle().take(values.len() * repeats).copied().collect();
            prop_assert_eq!(*gpu.distinct_registers(&values).unwrap(), *registers_of_i64(&values));
        }
    }
}
