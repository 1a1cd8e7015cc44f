//! Launching registered kernels on a [`Gpu`]: compiled pipelines (built once per kernel), bind
//! groups, dispatches, and the grid a launch needs.

use super::*;

impl Gpu {
    pub(super) fn compiled(
        &self,
        state: &mut State,
        kernel: &'static Kernel,
    ) -> Result<Arc<Compiled>> {
        if let Some(c) = state.pipelines.get(kernel.name) {
            return Ok(Arc::clone(c));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = state
            .modules
            .entry(kernel.file)
            .or_insert_with(|| {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(kernel.file),
                        source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(kernel.source)),
                    })
            })
            .clone();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .bindings
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.index,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        BindingKind::ReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.name),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.name),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(ShaderError::Gpu {
                kernel: kernel.name,
                message: e.to_string(),
            });
        }
        let compiled = Arc::new(Compiled { pipeline, layout });
        state.pipelines.insert(kernel.name, Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Records `dispatches` into one compute pass and submits it. Dispatches run in order and
    /// each sees the writes of the ones before it.
    pub(crate) fn run(&self, dispatches: &[Dispatch<'_>]) -> Result<()> {
        let mut state = self.lock();
        self.run_locked(&mut state, dispatches)
    }

    pub(super) fn run_locked(&self, state: &mut State, dispatches: &[Dispatch<'_>]) -> Result<()> {
        let max_groups = self.limits.max_compute_workgroups_per_dimension;
        for d in dispatches {
            if d.buffers.len() != d.kernel.storage_count() {
                return Err(ShaderError::Parameter {
                    name: "buffers",
                    value: d.buffers.len().to_string(),
                    reason: "does not match the kernel's storage bindings",
                });
            }
            if d.kernel.has_params() == d.params.is_empty() {
                return Err(ShaderError::Parameter {
                    name: "params",
                    value: d.params.len().to_string(),
                    reason: "a kernel has params exactly when it has a uniform binding",
                });
            }
            if let Some(&g) = d.groups.iter().find(|&&g| g > max_groups) {
                return Err(ShaderError::TooLarge {
                    what: d.kernel.name,
                    needed: u64::from(g),
                    max: u64::from(max_groups),
                    unit: "workgroups",
                    limit: "max_compute_workgroups_per_dimension",
                    reduce: "the batch size or sequence length",
                });
            }
        }
        let align = u64::from(self.limits.min_uniform_buffer_offset_alignment).max(16);
        let mut offsets = Vec::with_capacity(dispatches.len());
        let mut uniform_bytes: Vec<u8> = Vec::new();
        for d in dispatches {
            offsets.push(uniform_bytes.len() as u64);
            uniform_bytes.extend_from_slice(d.params);
            let padded = (uniform_bytes.len() as u64).next_multiple_of(align) as usize;
            uniform_bytes.resize(padded, 0);
        }
        let uniform_len = (uniform_bytes.len() as u64).max(align);
        let uniforms = match &state.uniforms {
            Some(u) if u.size() >= uniform_len => u.clone(),
            _ => {
                let u = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("canopy uniforms"),
                    size: uniform_len.next_power_of_two().max(4096),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                state.uniforms = Some(u.clone());
                u
            }
        };
        if !uniform_bytes.is_empty() {
            self.queue.write_buffer(&uniforms, 0, &uniform_bytes);
        }
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            for (d, &offset) in dispatches.iter().zip(&offsets) {
                let compiled = self.compiled(state, d.kernel)?;
                let mut storage = d.buffers.iter();
                let entries: Vec<wgpu::BindGroupEntry<'_>> = d
                    .kernel
                    .bindings
                    .iter()
                    .filter_map(|b| {
                        let resource = match b.kind {
                            BindingKind::Uniform => {
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &uniforms,
                                    offset,
                                    size: wgpu::BufferSize::new(d.params.len() as u64),
                                })
                            }
                            _ => storage.next()?.as_entire_binding(),
                        };
                        Some(wgpu::BindGroupEntry {
                            binding: b.index,
                            resource,
                        })
                    })
                    .collect();
                let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(d.kernel.name),
                    layout: &compiled.layout,
                    entries: &entries,
                });
                pass.set_pipeline(&compiled.pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
            }
        }
        self.queue.submit([encoder.finish()]);
        let name = dispatches.first().map_or("submit", |d| d.kernel.name);
        self.take_error(name)
    }

    /// A (x, y) grid of `groups` workgroups within the per-dimension limit; kernels recover
    /// the linear index as `y · nx + x` and skip indices past the end.
    pub(crate) fn grid(&self, groups: u64, what: &'static str) -> Result<[u32; 3]> {
        let max = u64::from(self.limits.max_compute_workgroups_per_dimension.max(1));
        if groups == 0 {
            return Ok([1, 1, 1]);
        }
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(ShaderError::TooLarge {
                what,
                needed: groups,
                max: max * max,
                unit: "workgroups",
                limit: "max_compute_workgroups_per_dimension²",
                reduce: "the batch size or sequence length",
            });
        }
        Ok([x as u32, y as u32, 1])
    }

    /// The grid for one thread per item, `per_group` threads per workgroup.
    pub(crate) fn grid_threads(
        &self,
        threads: u64,
        per_group: u32,
        what: &'static str,
    ) -> Result<[u32; 3]> {
        self.grid(threads.div_ceil(u64::from(per_group)), what)
    }
}
