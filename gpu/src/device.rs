//! The wgpu plumbing (feature `device`): one adapter and queue, and the kernels' pipelines.
//! Each kernel is a WGSL file in `kernels/` beside the CPU reference it must match bit for bit
//! (`agg`); the tests compare the two on random inputs. In CI the adapter is Mesa's lavapipe
//! (a Vulkan implementation on the CPU), found like any other.

use std::sync::mpsc;

use wgpu::util::DeviceExt;

use crate::agg::distinct::REGISTERS;

/// Why a kernel could not run.
#[derive(Debug)]
pub enum GpuError {
    Device(String),
    Run(String),
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuError::Device(why) => write!(f, "opening the GPU device: {why}"),
            GpuError::Run(why) => write!(f, "running a kernel: {why}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// Workgroups dispatched at most; threads then stride over the batch.
const GROUPS_MAX: u32 = 1024;
const GROUP_THREADS: u32 = 256;

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: String,
    distinct: wgpu::ComputePipeline,
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
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("distinct"),
            source: wgpu::ShaderSource::Wgsl(include_str!("kernels/distinct.wgsl").into()),
        });
        let distinct = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("distinct"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let adapter = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        Ok(Some(Gpu { device, queue, adapter, distinct }))
    }

    /// The adapter, in words (for the log line that says which device runs the kernels).
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// The COUNT DISTINCT registers of `values` (what [`crate::agg::distinct::registers_of_i64`]
    /// computes on the CPU).
    pub fn distinct_registers(&self, values: &[i64]) -> Result<Box<[u8; REGISTERS]>, GpuError> {
        let mut registers = Box::new([0u8; REGISTERS]);
        if values.is_empty() {
            return Ok(registers);
        }
        let words: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
        let input = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("distinct values"),
            contents: &words,
            usage: wgpu::BufferUsages::STORAGE,
        });
        let count =
            u32::try_from(values.len()).map_err(|_| GpuError::Run("a batch of 2^32 values".into()))?;
        let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("distinct batch"),
            contents: &count.to_le_bytes(),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let size = (REGISTERS * 4) as u64;
        let output = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("distinct registers"),
            contents: &vec![0u8; REGISTERS * 4],
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("distinct readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let layout = self.distinct.get_bind_group_layout(0);
        let bindings = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("distinct"),
            layout: &layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: input.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: output.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: uniform.as_entire_binding() },
            ],
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            pass.set_pipeline(&self.distinct);
            pass.set_bind_group(0, &bindings, &[]);
            pass.dispatch_workgroups(count.div_ceil(GROUP_THREADS).clamp(1, GROUPS_MAX), 1, 1);
        }
        encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, size);
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
        {
            let mapped = readback.slice(..).get_mapped_range();
            for (register, word) in registers.iter_mut().zip(mapped.chunks_exact(4)) {
                let rank = u32::from_le_bytes(word.try_into().expect("4 bytes"));
                *register = u8::try_from(rank).map_err(|_| GpuError::Run(format!("a rank of {rank}")))?;
            }
        }
        readback.unmap();
        Ok(registers)
    }
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
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
