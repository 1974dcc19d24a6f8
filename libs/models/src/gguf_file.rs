//! The GGUF v3 container (the file format llama.cpp loads): a writer for
//! the files Keel converts, and a reader of the header — metadata and tensor
//! table — so a written file can be checked without llama.cpp.
//!
//! Layout (ggml's `docs/gguf.md`): magic `GGUF`, version, tensor count,
//! metadata count, the metadata key/value pairs, one info record per tensor
//! (name, dims innermost first, type, offset into the data section), padding
//! to the alignment, then the tensor data, each tensor starting at a multiple
//! of the alignment. Everything is little-endian.

use std::io::{self, Write};

/// `GGUF` read as a little-endian u32.
const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const GGUF_VERSION: u32 = 3;
/// llama.cpp's default when a file has no `general.alignment` key.
pub const GGUF_ALIGNMENT: u64 = 32;

// Value type codes (`gguf_type` in ggml).
const TYPE_U8: u32 = 0;
const TYPE_I8: u32 = 1;
const TYPE_U16: u32 = 2;
const TYPE_I16: u32 = 3;
const TYPE_U32: u32 = 4;
const TYPE_I32: u32 = 5;
const TYPE_F32: u32 = 6;
const TYPE_BOOL: u32 = 7;
const TYPE_STRING: u32 = 8;
const TYPE_ARRAY: u32 = 9;
const TYPE_U64: u32 = 10;
const TYPE_I64: u32 = 11;
const TYPE_F64: u32 = 12;

/// A metadata value. llama.cpp checks the type of every key it reads, so
/// the variant matters as much as the number (`bert.block_count` must be a
/// u32, `tokenizer.ggml.token_type` an array of i32).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Bool(bool),
    String(String),
    StringArray(Vec<String>),
    I32Array(Vec<i32>),
}

/// The element type of a tensor's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufTensorType {
    F32,
}

impl GgufTensorType {
    fn code(self) -> u32 {
        match self {
            GgufTensorType::F32 => 0,
        }
    }

    fn from_code(code: u32) -> Option<GgufTensorType> {
        match code {
            0 => Some(GgufTensorType::F32),
            _ => None,
        }
    }

    pub fn element_size(self) -> u64 {
        match self {
            GgufTensorType::F32 => 4,
        }
    }
}

/// A tensor to write: `dims` innermost first (GGUF order, the reverse of
/// PyTorch's shape), `data` its little-endian bytes.
#[derive(Debug, Clone)]
pub struct GgufTensor<'data> {
    pub name: String,
    pub dims: Vec<u64>,
    pub tensor_type: GgufTensorType,
    pub data: &'data [u8],
}

impl GgufTensor<'_> {
    fn expected_bytes(&self) -> u64 {
        self.dims.iter().product::<u64>() * self.tensor_type.element_size()
    }
}

/// A tensor's entry in a file's tensor table; `offset` is relative to the
/// start of the data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub tensor_type: GgufTensorType,
    pub offset: u64,
}

/// What [`read_gguf_header`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    /// Where the data section starts, from the start of the file.
    pub data_offset: u64,
}

impl GgufHeader {
    pub fn value(&self, key: &str) -> Option<&GgufValue> {
        self.metadata
            .iter()
            .find(|(candidate, _)| candidate == key)
            .map(|(_, value)| value)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("gguf tensor `{name}` has {actual} bytes of data, its dims {dims:?} need {expected}")]
    TensorSize {
        name: String,
        dims: Vec<u64>,
        expected: u64,
        actual: u64,
    },
    #[error("cannot write gguf: {0}")]
    Write(#[from] io::Error),
    #[error("not a gguf v3 file: {0}")]
    Malformed(String),
}

/// Writes a whole GGUF v3 file and returns the number of bytes written.
/// Metadata and tensors keep the given order, so the same input always
/// gives the same bytes (the converted model is verified by its hash).
pub fn write_gguf(
    out: &mut impl Write,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensor<'_>],
) -> Result<u64, GgufError> {
    for tensor in tensors {
        let expected = tensor.expected_bytes();
        let actual = tensor.data.len() as u64;
        if expected != actual {
            return Err(GgufError::TensorSize {
                name: tensor.name.clone(),
                dims: tensor.dims.clone(),
                expected,
                actual,
            });
        }
    }
    let mut writer = CountingWriter {
        inner: out,
        written: 0,
    };
    writer.write_all(&GGUF_MAGIC)?;
    writer.write_all(&GGUF_VERSION.to_le_bytes())?;
    writer.write_all(&(tensors.len() as u64).to_le_bytes())?;
    writer.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (key, value) in metadata {
        write_string(&mut writer, key)?;
        write_value(&mut writer, value)?;
    }
    let mut data_offset = 0u64;
    for tensor in tensors {
        write_string(&mut writer, &tensor.name)?;
        writer.write_all(&(tensor.dims.len() as u32).to_le_bytes())?;
        for dim in &tensor.dims {
            writer.write_all(&dim.to_le_bytes())?;
        }
        writer.write_all(&tensor.tensor_type.code().to_le_bytes())?;
        writer.write_all(&data_offset.to_le_bytes())?;
        data_offset = align_up(data_offset + tensor.data.len() as u64);
    }
    write_padding(&mut writer)?;
    for tensor in tensors {
        writer.write_all(tensor.data)?;
        write_padding(&mut writer)?;
    }
    writer.flush()?;
    Ok(writer.written)
}

/// Reads the header of a GGUF v3 file (everything before the tensor data).
pub fn read_gguf_header(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    let mut reader = ByteReader { bytes, position: 0 };
    let magic = reader.take(4)?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::Malformed(format!("magic is {magic:?}")));
    }
    let version = reader.u32()?;
    if version != GGUF_VERSION {
        return Err(GgufError::Malformed(format!("version is {version}")));
    }
    let tensor_count = reader.u64()?;
    let metadata_count = reader.u64()?;
    let mut metadata = Vec::new();
    for _ in 0..metadata_count {
        let key = reader.string()?;
        let value_type = reader.u32()?;
        let value = reader.value(value_type)?;
        metadata.push((key, value));
    }
    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let name = reader.string()?;
        let dim_count = reader.u32()?;
        let mut dims = Vec::new();
        for _ in 0..dim_count {
            dims.push(reader.u64()?);
        }
        let type_code = reader.u32()?;
        let tensor_type = GgufTensorType::from_code(type_code).ok_or_else(|| {
            GgufError::Malformed(format!("tensor `{name}` has unsupported type {type_code}"))
        })?;
        let offset = reader.u64()?;
        tensors.push(GgufTensorInfo {
            name,
            dims,
            tensor_type,
            offset,
        });
    }
    let data_offset = align_up(reader.position as u64);
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        data_offset,
    })
}

fn align_up(offset: u64) -> u64 {
    offset.div_ceil(GGUF_ALIGNMENT) * GGUF_ALIGNMENT
}

fn write_padding(writer: &mut CountingWriter<'_, impl Write>) -> io::Result<()> {
    let padding = align_up(writer.written) - writer.written;
    let zeros = [0u8; GGUF_ALIGNMENT as usize];
    writer.write_all(&zeros[..padding as usize])
}

fn write_string(writer: &mut impl Write, text: &str) -> io::Result<()> {
    writer.write_all(&(text.len() as u64).to_le_bytes())?;
    writer.write_all(text.as_bytes())
}

fn write_value(writer: &mut impl Write, value: &GgufValue) -> io::Result<()> {
    match value {
        GgufValue::U32(number) => {
            writer.write_all(&TYPE_U32.to_le_bytes())?;
            writer.write_all(&number.to_le_bytes())
        }
        GgufValue::I32(number) => {
            writer.write_all(&TYPE_I32.to_le_bytes())?;
            writer.write_all(&number.to_le_bytes())
        }
        GgufValue::U64(number) => {
            writer.write_all(&TYPE_U64.to_le_bytes())?;
            writer.write_all(&number.to_le_bytes())
        }
        GgufValue::F32(number) => {
            writer.write_all(&TYPE_F32.to_le_bytes())?;
            writer.write_all(&number.to_le_bytes())
        }
        GgufValue::Bool(flag) => {
            writer.write_all(&TYPE_BOOL.to_le_bytes())?;
            writer.write_all(&[u8::from(*flag)])
        }
        GgufValue::String(text) => {
            writer.write_all(&TYPE_STRING.to_le_bytes())?;
            write_string(writer, text)
        }
        GgufValue::StringArray(texts) => {
            writer.write_all(&TYPE_ARRAY.to_le_bytes())?;
            writer.write_all(&TYPE_STRING.to_le_bytes())?;
            writer.write_all(&(texts.len() as u64).to_le_bytes())?;
            for text in texts {
                write_string(writer, text)?;
            }
            Ok(())
        }
        GgufValue::I32Array(numbers) => {
            writer.write_all(&TYPE_ARRAY.to_le_bytes())?;
            writer.write_all(&TYPE_I32.to_le_bytes())?;
            writer.write_all(&(numbers.len() as u64).to_le_bytes())?;
            for number in numbers {
                writer.write_all(&number.to_le_bytes())?;
            }
            Ok(())
        }
    }
}

/// Counts bytes so padding can be computed without `Seek`.
struct CountingWriter<'out, W: Write> {
    inner: &'out mut W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(buffer)?;
        self.written += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct ByteReader<'bytes> {
    bytes: &'bytes [u8],
    position: usize,
}

impl<'bytes> ByteReader<'bytes> {
    fn take(&mut self, count: usize) -> Result<&'bytes [u8], GgufError> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                GgufError::Malformed(format!(
                    "truncated: {count} bytes wanted at offset {}",
                    self.position
                ))
            })?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn length(&mut self) -> Result<usize, GgufError> {
        let length = self.u64()?;
        usize::try_from(length)
            .map_err(|_| GgufError::Malformed(format!("length {length} does not fit in memory")))
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let length = self.length()?;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| GgufError::Malformed("a string is not utf-8".to_string()))
    }

    fn value(&mut self, value_type: u32) -> Result<GgufValue, GgufError> {
        match value_type {
            TYPE_U32 => Ok(GgufValue::U32(self.u32()?)),
            TYPE_I32 => Ok(GgufValue::I32(i32::from_le_bytes(self.array()?))),
            TYPE_U64 => Ok(GgufValue::U64(self.u64()?)),
            TYPE_F32 => Ok(GgufValue::F32(f32::from_le_bytes(self.array()?))),
            TYPE_BOOL => {
                let [byte] = self.array::<1>()?;
                Ok(GgufValue::Bool(byte != 0))
            }
            TYPE_STRING => Ok(GgufValue::String(self.string()?)),
            TYPE_ARRAY => self.array_value(),
            TYPE_U8 | TYPE_I8 | TYPE_U16 | TYPE_I16 | TYPE_I64 | TYPE_F64 => Err(
                GgufError::Malformed(format!("value type {value_type} is not read by keel")),
            ),
            other => Err(GgufError::Malformed(format!("unknown value type {other}"))),
        }
    }

    fn array_value(&mut self) -> Result<GgufValue, GgufError> {
        let element_type = self.u32()?;
        let count = self.length()?;
        match element_type {
            TYPE_STRING => {
                let mut texts = Vec::new();
                for _ in 0..count {
                    texts.push(self.string()?);
                }
                Ok(GgufValue::StringArray(texts))
            }
            TYPE_I32 => {
                let mut numbers = Vec::new();
                for _ in 0..count {
                    numbers.push(i32::from_le_bytes(self.array()?));
                }
                Ok(GgufValue::I32Array(numbers))
            }
            other => Err(GgufError::Malformed(format!(
                "arrays of value type {other} are not read by keel"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect()
    }

    fn sample_metadata() -> Vec<(String, GgufValue)> {
        vec![
            (
                "general.architecture".to_string(),
                GgufValue::String("bert".to_string()),
            ),
            ("bert.block_count".to_string(), GgufValue::U32(6)),
            (
                "bert.attention.layer_norm_epsilon".to_string(),
                GgufValue::F32(1e-12),
            ),
            ("bert.attention.causal".to_string(), GgufValue::Bool(false)),
            ("sample.i32".to_string(), GgufValue::I32(-7)),
            ("sample.u64".to_string(), GgufValue::U64(1 << 40)),
            (
                "tokenizer.ggml.tokens".to_string(),
                GgufValue::StringArray(vec!["[PAD]".to_string(), "\u{2581}hello".to_string()]),
            ),
            (
                "tokenizer.ggml.token_type".to_string(),
                GgufValue::I32Array(vec![3, 1]),
            ),
        ]
    }

    #[test]
    fn a_written_file_reads_back_with_the_same_metadata_and_tensors() {
        let first = f32_bytes(&[1.0, 2.0, 3.0]);
        let second = f32_bytes(&[0.5; 6]);
        let tensors = vec![
            GgufTensor {
                name: "a.bias".to_string(),
                dims: vec![3],
                tensor_type: GgufTensorType::F32,
                data: &first,
            },
            GgufTensor {
                name: "b.weight".to_string(),
                dims: vec![3, 2],
                tensor_type: GgufTensorType::F32,
                data: &second,
            },
        ];
        let mut bytes = Vec::new();
        let written = write_gguf(&mut bytes, &sample_metadata(), &tensors).unwrap();
        assert_eq!(written, bytes.len() as u64);

        let header = read_gguf_header(&bytes).unwrap();
        assert_eq!(header.version, 3);
        assert_eq!(header.metadata, sample_metadata());
        assert_eq!(header.value("bert.block_count"), Some(&GgufValue::U32(6)));
        assert_eq!(header.data_offset % GGUF_ALIGNMENT, 0);
        // The first tensor's 12 bytes are padded to 32 before the second.
        assert_eq!(
            header.tensors,
            vec![
                GgufTensorInfo {
                    name: "a.bias".to_string(),
                    dims: vec![3],
                    tensor_type: GgufTensorType::F32,
                    offset: 0,
                },
                GgufTensorInfo {
                    name: "b.weight".to_string(),
                    dims: vec![3, 2],
                    tensor_type: GgufTensorType::F32,
                    offset: 32,
                },
            ]
        );
        let data_start = header.data_offset as usize;
        assert_eq!(&bytes[data_start..data_start + 12], first.as_slice());
        assert_eq!(&bytes[data_start + 12..data_start + 32], &[0u8; 20]);
        assert_eq!(&bytes[data_start + 32..data_start + 56], second.as_slice());
        // The file itself ends on the alignment.
        assert_eq!(bytes.len(), data_start + 64);
    }

    #[test]
    fn the_header_bytes_follow_the_gguf_v3_layout() {
        let metadata = vec![("k".to_string(), GgufValue::U32(0x0102_0304))];
        let mut bytes = Vec::new();
        write_gguf(&mut bytes, &metadata, &[]).unwrap();
        let expected_prefix: Vec<u8> = [
            b"GGUF".to_vec(),
            3u32.to_le_bytes().to_vec(),
            0u64.to_le_bytes().to_vec(),
            1u64.to_le_bytes().to_vec(),
            1u64.to_le_bytes().to_vec(),
            b"k".to_vec(),
            4u32.to_le_bytes().to_vec(),
            vec![0x04, 0x03, 0x02, 0x01],
        ]
        .concat();
        assert_eq!(&bytes[..expected_prefix.len()], expected_prefix.as_slice());
        assert_eq!(bytes.len(), 64);
        assert!(bytes[expected_prefix.len()..].iter().all(|byte| *byte == 0));
    }

    #[test]
    fn data_that_does_not_match_the_dims_is_refused() {
        let data = f32_bytes(&[1.0, 2.0]);
        let tensors = vec![GgufTensor {
            name: "short".to_string(),
            dims: vec![3],
            tensor_type: GgufTensorType::F32,
            data: &data,
        }];
        let error = write_gguf(&mut Vec::new(), &[], &tensors).unwrap_err();
        assert_eq!(
            error.to_string(),
            "gguf tensor `short` has 8 bytes of data, its dims [3] need 12"
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_malformed() {
        let mut bytes = Vec::new();
        write_gguf(&mut bytes, &sample_metadata(), &[]).unwrap();
        assert!(matches!(
            read_gguf_header(&bytes[..40]),
            Err(GgufError::Malformed(_))
        ));
        assert!(matches!(
            read_gguf_header(b"PK\x03\x04 not a gguf file"),
            Err(GgufError::Malformed(_))
        ));
    }
}
