//! Types of the generated protobuf schema table (`schema_gen.rs`).

/// What one field (or a map's value) holds on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `string`.
    Str,
    /// `bool`.
    Bool,
    /// `int32` (varint, sign-extended to 64 bits when negative).
    I32,
    /// `int64` (varint).
    I64,
    /// `double` (fixed64).
    F64,
    /// `bytes`: standard base64 in JSON, as Go encodes `[]byte`.
    Bytes,
    /// An embedded message, by index into `MESSAGES`.
    Msg(u16),
}

/// How many values a field holds and how they land in the JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Card {
    /// One value: `"json": value`.
    One,
    /// `repeated`: a JSON array, left out when empty.
    Rep,
    /// `map<string, Kind>`: a JSON object with sorted keys, left out when empty.
    Map,
    /// A Go struct embedded with `json:",inline"`: its fields merge into the parent.
    Inline,
}

/// One field of a message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    /// Protobuf field number.
    pub tag: u32,
    /// Upstream's JSON name (empty for [`Card::Inline`]).
    pub json: &'static str,
    /// Wire type and meaning.
    pub kind: Kind,
    /// Cardinality.
    pub card: Card,
    /// For scalars: keep a zero value ("" / 0 / false) in the JSON. True for Go pointer fields
    /// (sent only when set) and for fields without `omitempty` (required in OpenAPI).
    pub keep_zero: bool,
}

/// Messages whose JSON form upstream writes by hand instead of field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// An ordinary message.
    None,
    /// `metav1.Time` {seconds, nanos}: RFC 3339 in UTC with seconds, `null` when zero.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds, `null` when zero.
    MicroTime,
    /// `metav1.Duration` {duration (ns)}: Go's `time.Duration.String()`.
    Duration,
    /// `resource.Quantity` {string}: the string.
    Quantity,
    /// `intstr.IntOrString` {type, intVal, strVal}: a number or a string.
    IntOrString,
    /// `runtime.RawExtension`, `metav1.FieldsV1`, `apiextensions.JSON` {raw}: embedded JSON.
    RawJson,
    /// `JSONSchemaPropsOrBool` {allows, schema}: the schema, or a boolean.
    SchemaOrBool,
    /// `JSONSchemaPropsOrArray` / `OrStringArray` {schema, repeated}: the array, or the schema.
    SchemaOrArray,
    /// A named Go slice (`metav1.Verbs`, `ExtraValue`) wrapped as {repeated items}: the array.
    List,
}

/// One protobuf message.
#[derive(Debug)]
pub(crate) struct Message {
    /// k8s-pb module path and name, e.g. `api.core.v1.ConfigMap`.
    pub name: &'static str,
    /// Custom JSON form, if any.
    pub special: Special,
    /// Fields in Go struct order (the order of upstream's JSON).
    pub fields: &'static [Field],
}
