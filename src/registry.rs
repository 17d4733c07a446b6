//! Losses by name, on host arrays: what the command line (`eval`, `check`, `bench`) drives.
//! A loss registers itself here once, in [`losses`]; it describes its inputs and options and
//! runs on the GPU and on the reference.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::random::Rng;

/// Element data of a host array.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// Floats (f32 and f64 files are read as f32).
    F32(Vec<f32>),
    /// Integers (int32 and int64 files).
    I64(Vec<i64>),
}

/// A host array with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostArray {
    /// Outermost first; `[]` for a scalar.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: HostData,
}

impl HostArray {
    /// A float array.
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Self {
        Self {
            shape: shape.to_vec(),
            data: HostData::F32(data),
        }
    }

    /// An integer array.
    pub fn i64(shape: &[usize], data: Vec<i64>) -> Self {
        Self {
            shape: shape.to_vec(),
            data: HostData::I64(data),
        }
    }
}

/// One problem: named inputs and options (values as text, as on the command line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Case {
    /// Inputs by name (LOSSES.md spellings).
    pub inputs: BTreeMap<String, HostArray>,
    /// Options by name.
    pub options: BTreeMap<String, String>,
}

/// Results on the host: the loss and the gradient of each differentiable input.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated<T> {
    /// One value for mean/sum (`loss_shape` `[]`), one per item for none.
    pub loss: Vec<T>,
    /// Shape of the loss.
    pub loss_shape: Vec<usize>,
    /// (input name, gradient, shape) for each differentiable input.
    pub grads: Vec<(&'static str, Vec<T>, Vec<usize>)>,
    /// The reference's [`crate::reference::RefOutput::grad_terms`]; 0 for GPU results.
    pub grad_terms: f64,
    /// The reference's [`crate::reference::RefOutput::decision_gap`]; infinite for GPU and
    /// CPU results.
    pub decision_gap: f64,
}

impl Evaluated<f32> {
    /// A GPU or CPU result: every gradient has the shape `grad_shape`.
    pub fn from_values(
        out: crate::LossValues,
        loss_shape: Vec<usize>,
        grad_shape: &[usize],
    ) -> Self {
        Self {
            loss: out.loss,
            loss_shape,
            grads: out
                .grads
                .into_iter()
                .map(|(name, g)| (name, g, grad_shape.to_vec()))
                .collect(),
            grad_terms: 0.0,
            decision_gap: f64::INFINITY,
        }
    }
}

impl Evaluated<f64> {
    /// A reference result: every gradient has the shape `grad_shape`.
    pub fn from_reference(
        out: crate::reference::RefOutput,
        loss_shape: Vec<usize>,
        grad_shape: &[usize],
    ) -> Self {
        Self {
            loss: out.loss,
            loss_shape,
            grads: out
                .grads
                .into_iter()
                .map(|(name, g)| (name, g, grad_shape.to_vec()))
                .collect(),
            grad_terms: out.grad_terms,
            decision_gap: out.decision_gap,
        }
    }

    /// Whether a discrete decision of the loss (mining, a hinge's gradient) lies within f32
    /// rounding of its boundary (`decision_gap` below 1e-5 of the distance scale), where an
    /// f32 result may legitimately decide the other way; comparisons draw another case.
    pub fn ambiguous(&self) -> bool {
        self.decision_gap < 1e-5
    }

    /// `tol` for this result's gradients: their error is measured against the scale of the
    /// terms they are summed from.
    pub fn grad_tolerance(&self, tol: crate::Tolerance) -> crate::Tolerance {
        crate::Tolerance {
            floor: tol.floor.max(self.grad_terms),
            ..tol
        }
    }
}

/// Declared input of a loss.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    /// LOSSES.md name.
    pub name: &'static str,
    /// Whether a gradient is returned for it.
    pub differentiable: bool,
    /// Whether it must be given.
    pub required: bool,
}

/// A loss as the command line sees it.
pub trait LossDef: Sync {
    /// The LOSSES.md name, e.g. `cross-entropy`.
    fn name(&self) -> &'static str;
    /// Its inputs.
    fn inputs(&self) -> &'static [InputSpec];
    /// Its option names.
    fn options(&self) -> &'static [&'static str];
    /// Runs on the GPU.
    ///
    /// # Errors
    /// Bad inputs or options, device errors.
    fn gpu(&self, engine: &Engine, case: &Case) -> Result<Evaluated<f32>>;
    /// Runs the multi-threaded CPU backend.
    ///
    /// # Errors
    /// Bad inputs or options.
    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>>;
    /// Runs the f64 reference.
    ///
    /// # Errors
    /// Bad inputs or options.
    fn reference(&self, case: &Case) -> Result<Evaluated<f64>>;
    /// A random problem covering the loss's options, for `check`.
    fn random_case(&self, rng: &mut Rng) -> Case;
}

/// Every registered loss.
pub fn losses() -> &'static [&'static dyn LossDef] {
    use crate::losses::cross_entropy::RowDef;
    use crate::losses::elementwise::DEFS as E;
    use crate::losses::metric_defs::METRIC_DEFS as M;
    static LOSSES: [&dyn LossDef; 17] = [
        &RowDef::CROSS_ENTROPY,
        &RowDef::SOFTMAX_FOCAL,
        &E[0],
        &E[1],
        &E[2],
        &E[3],
        &E[4],
        &E[5],
        &E[6],
        &E[7],
        &E[8],
        &M[0],
        &M[1],
        &M[2],
        &M[3],
        &M[4],
        &M[5],
    ];
    &LOSSES
}

/// The loss called `name`.
///
/// # Errors
/// [`Error::Unknown`] listing the known names.
pub fn find(name: &str) -> Result<&'static dyn LossDef> {
    losses()
        .iter()
        .copied()
        .find(|l| l.name() == name)
        .ok_or_else(|| Error::Unknown {
            kind: "loss",
            name: name.into(),
            hint: format!(
                " (known: {})",
                losses()
                    .iter()
                    .map(|l| l.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

impl Case {
    /// Checks that every input and option is known to `def` and the required inputs are here.
    ///
    /// # Errors
    /// [`Error::Unknown`] for a stray name, [`Error::Shape`] for a missing input.
    pub fn check_names(&self, def: &dyn LossDef) -> Result<()> {
        for name in self.inputs.keys() {
            if !def.inputs().iter().any(|s| s.name == name) {
                let known: Vec<_> = def.inputs().iter().map(|s| s.name).collect();
                return Err(Error::Unknown {
                    kind: "input",
                    name: name.clone(),
                    hint: format!(" for {} (inputs: {})", def.name(), known.join(", ")),
                });
            }
        }
        for name in self.options.keys() {
            if !def.options().contains(&name.as_str()) {
                return Err(Error::Unknown {
                    kind: "option",
                    name: name.clone(),
                    hint: format!(
                        " for {} (options: {})",
                        def.name(),
                        def.options().join(", ")
                    ),
                });
            }
        }
        for spec in def.inputs().iter().filter(|s| s.required) {
            if !self.inputs.contains_key(spec.name) {
                return Err(Error::Shape {
                    input: spec.name,
                    expected: "an array (required input is missing)".into(),
                    got: vec![],
                });
            }
        }
        Ok(())
    }

    /// The input `name`, if given.
    pub fn input(&self, name: &str) -> Option<&HostArray> {
        self.inputs.get(name)
    }

    /// The float input `name` (integers are converted), if given.
    pub fn floats(&self, name: &'static str) -> Option<(Vec<f32>, Vec<usize>)> {
        self.input(name).map(|a| {
            let data = match &a.data {
                HostData::F32(v) => v.clone(),
                HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            };
            (data, a.shape.clone())
        })
    }

    /// The option `name` parsed, or `default`.
    ///
    /// # Errors
    /// [`Error::Option`] when the text does not parse.
    pub fn option<T: FromStr>(&self, name: &'static str, default: T) -> Result<T> {
        match self.options.get(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| Error::Option {
                option: name,
                value: text.clone(),
                reason: "does not parse as the option's type",
            }),
        }
    }

    /// The boolean option `name` (true/false/1/0), or `default`.
    ///
    /// # Errors
    /// [`Error::Option`] for other text.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool> {
        match self.options.get(name).map(|s| s.to_ascii_lowercase()) {
            None => Ok(default),
            Some(t) if t == "true" || t == "1" => Ok(true),
            Some(t) if t == "false" || t == "0" => Ok(false),
            Some(t) => Err(Error::Option {
                option: name,
                value: t,
                reason: "expected true or false",
            }),
        }
    }

    /// Adds an input (builder style).
    pub fn with(mut self, name: &str, a: HostArray) -> Self {
        self.inputs.insert(name.into(), a);
        self
    }

    /// Adds an option (builder style).
    pub fn set(mut self, name: &str, value: impl ToString) -> Self {
        self.options.insert(name.into(), value.to_string());
        self
    }
}

/// Integer labels as i32, from an integer array or a float array of whole numbers.
///
/// # Errors
/// [`Error::Value`] naming the first value that is not a whole number in i32's range.
pub fn labels_i32(input: &'static str, a: &HostArray) -> Result<Vec<i32>> {
    let bad = |row: usize, value: String| Error::Value {
        input,
        row,
        value,
        reason: "labels must be whole numbers in i32's range".into(),
    };
    match &a.data {
        HostData::I64(v) => v
            .iter()
            .enumerate()
            .map(|(i, &x)| i32::try_from(x).map_err(|_| bad(i, x.to_string())))
            .collect(),
        HostData::F32(v) => v
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if x.fract() == 0.0 && x.abs() < 2.1e9 {
                    Ok(x as i32)
                } else {
                    Err(bad(i, x.to_string()))
                }
            })
            .collect(),
    }
}

/// A host upstream gradient moved to the device for a GPU run: per item when the reduction
/// is none and it has one value per item of `shape`, else a scalar.
pub(crate) struct DeviceUpstream {
    per_item: Option<crate::Tensor>,
    scalar: Option<f32>,
}

impl DeviceUpstream {
    pub(crate) fn upload(
        engine: &Engine,
        host: Option<&[f32]>,
        shape: &[usize],
        reduction: crate::Reduction,
    ) -> Result<Self> {
        let items: usize = shape.iter().product();
        Ok(match host {
            Some(g) if reduction == crate::Reduction::None && g.len() == items => Self {
                per_item: Some(engine.upload(g, shape)?),
                scalar: None,
            },
            Some(g) => Self {
                per_item: None,
                scalar: g.first().copied(),
            },
            None => Self {
                per_item: None,
                scalar: None,
            },
        })
    }

    pub(crate) fn get(&self) -> crate::Upstream<'_> {
        match (&self.per_item, self.scalar) {
            (Some(t), _) => crate::Upstream::PerItem(t),
            (None, Some(g)) => crate::Upstream::Scalar(g),
            (None, None) => crate::Upstream::Ones,
        }
    }
}
