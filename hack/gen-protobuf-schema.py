#!/usr/bin/env python3
"""Generate pkg/apiserver/src/protobuf/schema_gen.rs: the protobuf schema of every
built-in Kubernetes type, used to transcode `application/vnd.kubernetes.protobuf`
request bodies into the JSON upstream's JSON encoding would produce.

Sources (read from ~/.cargo/registry/src; k8s-openapi is a workspace dependency, k8s-pb is
not: put it in the registry cache once by adding `k8s-pb = "=0.9.0"` to any Cargo.toml,
running `cargo fetch`, and reverting):
  * k8s-pb 0.9.0 (prost code generated from upstream's generated.proto files):
    messages, field tags, wire types, repeated/map, message references;
  * k8s-openapi 0.29.0 (feature v1_33): exact JSON field names (from its
    Serialize impls), required-ness (non-Option fields), and the group/version/kind
    of every top-level resource.

Zero values (go-to-protobuf writes Go value fields always and pointer fields only
when non-nil; encoding/json drops zero value fields tagged omitempty) are decided
per scalar field, see `keep_zero()` below.

Usage: python3 hack/gen-protobuf-schema.py   (from the repository root)
Python 3 standard library only.
"""

import glob
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "pkg/apiserver/src/protobuf/schema_gen.rs")


def registry_dir(name):
    cands = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/" + name)))
    if not cands:
        sys.exit(f"{name} not found in ~/.cargo/registry/src (see the docstring of this script)")
    return cands[-1]


PB = os.path.join(registry_dir("k8s-pb-0.9.0"), "src")
OA = os.path.join(registry_dir("k8s-openapi-0.29.0"), "src/v1_33")


def norm(name):
    """Normalised field name: lowercase alphanumerics only ("podIPs" == "pod_ips")."""
    return re.sub(r"[^a-z0-9]", "", name.replace("r#", "").lower())


# ---------------------------------------------------------------------------
# Pointer scalar fields (Go `*int32`, `*bool`, `*string`, `*SomeStringType`, ...).
# A scalar field that is neither listed here nor required (no omitempty) is a Go
# value field with omitempty: its zero value is dropped from the JSON.
#
# core/v1: complete, transcribed from upstream k8s.io/api core/v1
# zz_generated.deepcopy.go (every `if in.X != nil { ...; *out = new(<scalar>) }`).
# Other groups: from upstream types.go as known to the author; see
# pkg/apiserver/src/protobuf/mod.rs for the heuristic and its limits.
#
# Keys are "Message" (any package) or "<group-dir>.<version>.Message" (suffix of
# the message's module path); values are Go/JSON field names (normalised).
# ---------------------------------------------------------------------------
POINTERS = {
    # --- core/v1 (from deepcopy, authoritative) ---
    "core.v1.AppArmorProfile": "localhostProfile",
    "core.v1.AzureDiskVolumeSource": "cachingMode fsType readOnly kind",
    "core.v1.AzureFilePersistentVolumeSource": "secretNamespace",
    "core.v1.CSIVolumeSource": "readOnly fsType",
    "core.v1.ClientIPConfig": "timeoutSeconds",
    "core.v1.ClusterTrustBundleProjection": "name signerName optional",
    "core.v1.ConfigMap": "immutable",
    "core.v1.ConfigMapEnvSource": "optional",
    "core.v1.ConfigMapKeySelector": "optional",
    "core.v1.ConfigMapProjection": "optional",
    "core.v1.ConfigMapVolumeSource": "defaultMode optional",
    "core.v1.Container": "restartPolicy",
    "core.v1.ContainerStatus": "started stopSignal",
    "core.v1.DownwardAPIVolumeFile": "mode",
    "core.v1.DownwardAPIVolumeSource": "defaultMode",
    "core.v1.EndpointAddress": "nodeName",
    "core.v1.EndpointPort": "appProtocol",
    "core.v1.EphemeralContainer": "restartPolicy",
    "core.v1.EphemeralContainerCommon": "restartPolicy",
    "core.v1.FCVolumeSource": "lun",
    "core.v1.FileKeySelector": "optional",
    "core.v1.GRPCAction": "service",
    "core.v1.GlusterfsPersistentVolumeSource": "endpointsNamespace",
    "core.v1.HostPathVolumeSource": "type",
    "core.v1.ISCSIPersistentVolumeSource": "initiatorName",
    "core.v1.ISCSIVolumeSource": "initiatorName",
    "core.v1.KeyToPath": "mode",
    "core.v1.Lifecycle": "stopSignal",
    "core.v1.LoadBalancerIngress": "ipMode",
    "core.v1.LocalVolumeSource": "fsType",
    "core.v1.NodeFeatures": "supplementalGroupsPolicy",
    "core.v1.NodeRuntimeHandlerFeatures": "recursiveReadOnlyMounts userNamespaces",
    "core.v1.NodeSwapStatus": "capacity",
    "core.v1.PersistentVolumeClaimSpec": "storageClassName volumeMode volumeAttributesClassName",
    "core.v1.PersistentVolumeClaimStatus": "currentVolumeAttributesClassName",
    "core.v1.PersistentVolumeSpec": "volumeMode volumeAttributesClassName",
    "core.v1.PodCertificateProjection": "maxExpirationSeconds",
    "core.v1.PodDNSConfigOption": "value",
    "core.v1.PodLogOptions": "sinceSeconds tailLines limitBytes stream",
    "core.v1.PodResourceClaim": "resourceClaimName resourceClaimTemplateName",
    "core.v1.PodResourceClaimStatus": "resourceClaimName",
    "core.v1.PodSchedulingGroup": "podGroupName",
    "core.v1.PodSecurityContext": "runAsUser runAsGroup runAsNonRoot supplementalGroupsPolicy fsGroup "
    "fsGroupChangePolicy seLinuxChangePolicy",
    "core.v1.PodSpec": "terminationGracePeriodSeconds activeDeadlineSeconds automountServiceAccountToken "
    "shareProcessNamespace priority runtimeClassName enableServiceLinks preemptionPolicy setHostnameAsFQDN "
    "hostUsers hostnameOverride",
    "core.v1.PortStatus": "error",
    "core.v1.Preconditions": "uid",
    "core.v1.Probe": "terminationGracePeriodSeconds",
    "core.v1.ProjectedVolumeSource": "defaultMode",
    "core.v1.ReplicationControllerSpec": "replicas",
    "core.v1.ResourceHealth": "message",
    "core.v1.SeccompProfile": "localhostProfile",
    "core.v1.Secret": "immutable",
    "core.v1.SecretEnvSource": "optional",
    "core.v1.SecretKeySelector": "optional",
    "core.v1.SecretProjection": "optional",
    "core.v1.SecretVolumeSource": "defaultMode optional",
    "core.v1.SecurityContext": "privileged runAsUser runAsGroup runAsNonRoot readOnlyRootFilesystem "
    "allowPrivilegeEscalation procMount",
    "core.v1.ServiceAccount": "automountServiceAccountToken",
    "core.v1.ServiceAccountTokenProjection": "expirationSeconds",
    "core.v1.ServicePort": "appProtocol",
    "core.v1.ServiceSpec": "ipFamilyPolicy allocateLoadBalancerNodePorts loadBalancerClass "
    "internalTrafficPolicy trafficDistribution",
    "core.v1.Toleration": "tolerationSeconds",
    "core.v1.TopologySpreadConstraint": "minDomains nodeAffinityPolicy nodeTaintsPolicy",
    "core.v1.TypedLocalObjectReference": "apiGroup",
    "core.v1.TypedObjectReference": "apiGroup namespace",
    "core.v1.VolumeMount": "recursiveReadOnly mountPropagation",
    "core.v1.VolumeMountStatus": "recursiveReadOnly",
    "core.v1.WindowsSecurityContextOptions": "gmsaCredentialSpecName gmsaCredentialSpec runAsUserName hostProcess",
    # --- meta/v1 ---
    "meta.v1.ObjectMeta": "deletionGracePeriodSeconds",
    "meta.v1.OwnerReference": "controller blockOwnerDeletion",
    "meta.v1.ListMeta": "remainingItemCount",
    "meta.v1.DeleteOptions": "gracePeriodSeconds orphanDependents propagationPolicy "
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "meta.v1.Preconditions": "uid resourceVersion",
    "meta.v1.ListOptions": "timeoutSeconds sendInitialEvents",
    "meta.v1.PatchOptions": "force",
    # --- apps ---
    "DeploymentSpec": "replicas revisionHistoryLimit progressDeadlineSeconds",
    "DeploymentStatus": "collisionCount terminatingReplicas",
    "StatefulSetSpec": "replicas revisionHistoryLimit",
    "StatefulSetStatus": "collisionCount",
    "RollingUpdateStatefulSetStrategy": "partition",
    "ReplicaSetSpec": "replicas",
    "ReplicaSetStatus": "terminatingReplicas",
    "DaemonSetSpec": "revisionHistoryLimit",
    "DaemonSetStatus": "collisionCount",
    # --- autoscaling ---
    "HorizontalPodAutoscalerSpec": "minReplicas targetCPUUtilizationPercentage",
    "HorizontalPodAutoscalerStatus": "observedGeneration currentCPUUtilizationPercentage",
    "HPAScalingRules": "stabilizationWindowSeconds selectPolicy",
    "MetricTarget": "averageUtilization",
    "MetricValueStatus": "averageUtilization",
    "ResourceMetricSource": "targetAverageUtilization",
    "ResourceMetricStatus": "currentAverageUtilization",
    "ContainerResourceMetricSource": "targetAverageUtilization",
    "ContainerResourceMetricStatus": "currentAverageUtilization",
    # --- batch ---
    "JobSpec": "parallelism completions activeDeadlineSeconds backoffLimit backoffLimitPerIndex "
    "maxFailedIndexes manualSelector ttlSecondsAfterFinished completionMode suspend podReplacementPolicy managedBy",
    "JobStatus": "ready terminating failedIndexes",
    "PodFailurePolicyOnExitCodesRequirement": "containerName",
    "SuccessPolicyRule": "succeededIndexes succeededCount",
    "CronJobSpec": "startingDeadlineSeconds suspend successfulJobsHistoryLimit failedJobsHistoryLimit timeZone",
    # --- policy ---
    "PodDisruptionBudgetSpec": "unhealthyPodEvictionPolicy",
    # --- networking ---
    "IngressSpec": "ingressClassName",
    "HTTPIngressPath": "pathType",
    "IngressClassParametersReference": "apiGroup scope namespace",
    "NetworkPolicyPort": "protocol endPort",
    "IngressPortStatus": "error",
    # --- discovery ---
    "discovery.v1.Endpoint": "hostname nodeName zone",
    "discovery.v1beta1.Endpoint": "hostname nodeName",
    "EndpointConditions": "ready serving terminating",
    "discovery.v1.EndpointPort": "name protocol port appProtocol",
    "discovery.v1beta1.EndpointPort": "name protocol port appProtocol",
    # --- storage ---
    "StorageClass": "reclaimPolicy allowVolumeExpansion volumeBindingMode",
    "CSIDriverSpec": "attachRequired podInfoOnMount storageCapacity fsGroupPolicy requiresRepublish seLinuxMount "
    "nodeAllocatableUpdatePeriodSeconds",
    "VolumeAttachmentSource": "persistentVolumeName",
    "VolumeError": "errorCode",
    "VolumeNodeResources": "count",
    "storage.v1.TokenRequest": "expirationSeconds",
    "storage.v1beta1.TokenRequest": "expirationSeconds",
    # --- scheduling ---
    "PriorityClass": "preemptionPolicy",
    # --- authentication / certificates ---
    "TokenRequestSpec": "expirationSeconds",
    "CertificateSigningRequestSpec": "expirationSeconds signerName",
    "PodCertificateRequestSpec": "maxExpirationSeconds",
    # --- coordination ---
    "LeaseSpec": "holderIdentity leaseDurationSeconds leaseTransitions strategy preferredHolder",
    # --- admissionregistration ---
    "ValidatingWebhook": "failurePolicy matchPolicy sideEffects timeoutSeconds",
    "MutatingWebhook": "failurePolicy matchPolicy sideEffects timeoutSeconds reinvocationPolicy",
    "ServiceReference": "path port",
    "WebhookClientConfig": "url",
    "Rule": "scope",
    "RuleWithOperations": "scope",
    "ValidatingAdmissionPolicySpec": "failurePolicy",
    "MutatingAdmissionPolicySpec": "failurePolicy reinvocationPolicy",
    "MatchResources": "matchPolicy",
    "ParamRef": "parameterNotFoundAction",
    "Validation": "reason",
    # --- apiextensions ---
    "CustomResourceDefinitionVersion": "deprecationWarning",
    "JsonSchemaProps": "maximum minimum maxLength minLength maxItems minItems maxProperties minProperties "
    "multipleOf xKubernetesPreserveUnknownFields xKubernetesListType xKubernetesMapType",
    "ValidationRule": "reason optionalOldSelf",
    "CustomResourceSubresourceScale": "labelSelectorPath",
    # --- flowcontrol ---
    "ExemptPriorityLevelConfiguration": "nominalConcurrencyShares lendablePercent",
    "flowcontrol.v1.LimitedPriorityLevelConfiguration": "nominalConcurrencyShares lendablePercent borrowingLimitPercent",
    "LimitedPriorityLevelConfiguration": "lendablePercent borrowingLimitPercent",
    # --- resource (DRA) ---
    "DeviceAttribute": "int bool string version",
    "DeviceRequest": "adminAccess",
    "ExactDeviceRequest": "adminAccess",
    "DeviceRequestAllocationResult": "adminAccess shareID bindingConditions",
    "DeviceToleration": "tolerationSeconds",
    "resource.v1.ResourceSliceSpec": "nodeName allNodes perDeviceNodeSelection",
    "resource.v1beta2.ResourceSliceSpec": "nodeName allNodes perDeviceNodeSelection",
    "resource.v1beta1.ResourceSliceSpec": "perDeviceNodeSelection",
    "resource.v1.Device": "nodeName allNodes bindsToNode allowMultipleAllocations",
    "resource.v1beta2.Device": "nodeName allNodes bindsToNode allowMultipleAllocations",
    "BasicDevice": "nodeName allNodes bindsToNode allowMultipleAllocations",
}

# Go value fields WITHOUT omitempty that k8s-openapi nevertheless shows as optional:
# keep their zero value. (Required fields in k8s-openapi are kept automatically.)
KEEP_ZERO_EXTRA = {}


# JSON names the Rust-name fallback gets wrong (initialisms), for messages k8s-openapi lacks.
FIX_JSON = {
    "insecureskiptlsverifybackend": "insecureSkipTLSVerifyBackend",
    "desiredapiversion": "desiredAPIVersion",
    "nodeuid": "nodeUID",
    "poduid": "podUID",
    "serviceaccountuid": "serviceAccountUID",
    "shareid": "shareID",
    "carpip": "carpIP",
    "jsonschemas": "JSONSchemas",
}


def pointer_fields(msg_path):
    """Set of normalised pointer field names for a message, e.g. 'api.core.v1.PodSpec'."""
    out = set()
    short = msg_path.split(".")[-1]
    for key, names in POINTERS.items():
        if key == short or msg_path.endswith("." + key):
            out |= {norm(n) for n in names.split()}
    return out


# ---------------------------------------------------------------------------
# k8s-openapi: JSON names, required-ness, GVKs
# ---------------------------------------------------------------------------
oa_defs = {}  # "io.k8s.api.core.v1.ContainerPort" -> {norm: (json, required)}
oa_by_short = {}  # "ContainerPort" -> [defs]
oa_names = {}  # norm -> json (global fallback)
gvk = {}  # module dir ("api/apps/v1") -> (group, version)
kinds = {}  # (module dir, lowercased struct name) -> kind

for path in glob.glob(os.path.join(OA, "**/*.rs"), recursive=True):
    src = open(path, encoding="utf-8").read()
    m = re.search(r"^// Generated from definition (\S+)", src, re.M)
    if not m:
        continue
    defname = m.group(1)
    fields = {}
    ser = src.find("fn serialize<S>")
    body = src[ser:] if ser >= 0 else ""
    for fm in re.finditer(
        r'(if let Some\(value\) = &self\.\w+ \{\s*)?crate::serde::ser::SerializeStruct::serialize_field\(&mut state, "([^"]+)", ([^)]*)\)',
        body,
    ):
        json = fm.group(2)
        if json in ("apiVersion", "kind") and "Resource>" in fm.group(3):
            continue
        required = fm.group(1) is None
        fields[norm(json)] = (json, required)
        oa_names.setdefault(norm(json), json)
    oa_defs[defname] = fields
    short = defname.split(".")[-1]
    oa_by_short.setdefault(short, []).append(fields)
    rel = os.path.relpath(os.path.dirname(path), OA)
    av = re.search(r'const API_VERSION: &\'static str = "([^"]*)";', src)
    kd = re.search(r'const KIND: &\'static str = "([^"]*)";', src)
    gp = re.search(r'const GROUP: &\'static str = "([^"]*)";', src)
    st = re.search(r"pub struct (\w+)", src)
    if av and kd and gp and st:
        version = av.group(1).split("/")[-1]
        gvk[rel] = (gp.group(1), version)
        kinds[(rel, st.group(1).lower())] = kd.group(1)

# Groups of proto packages k8s-openapi 1.33 does not carry.
EXTRA_GROUPS = {
    "api/admission": "admission.k8s.io",
    "api/apidiscovery": "apidiscovery.k8s.io",
    "api/imagepolicy": "imagepolicy.k8s.io",
    "api/extensions": "extensions",
    "metrics/pkg/apis/metrics": "metrics.k8s.io",
    "metrics/pkg/apis/custom_metrics": "custom.metrics.k8s.io",
    "metrics/pkg/apis/external_metrics": "external.metrics.k8s.io",
    "apimachinery/pkg/apis/testapigroup": "testapigroup.apimachinery.k8s.io",
}
group_of_dir = {}
for rel, (group, _v) in gvk.items():
    group_of_dir[os.path.dirname(rel)] = group
group_of_dir.update(EXTRA_GROUPS)


def oa_definition(module, name):
    """k8s-openapi field map for a k8s-pb message, or None."""
    prefix = {
        "api": "io.k8s.api",
        "apimachinery": "io.k8s.apimachinery",
        "apiextensions_apiserver": "io.k8s.apiextensions-apiserver",
        "kube_aggregator": "io.k8s.kube-aggregator",
    }.get(module[0])
    if prefix:
        full = prefix + "." + ".".join(module[1:]) + "."
        for cand in (name, name.replace("Json", "JSON")):
            if full + cand in oa_defs:
                return oa_defs[full + cand]
    for cand in (name, name.replace("Json", "JSON")):
        if cand in oa_by_short:
            return oa_by_short[cand][0]
    return None


# ---------------------------------------------------------------------------
# k8s-pb: messages
# ---------------------------------------------------------------------------
messages = {}  # "api.core.v1.ConfigMap" -> dict(module, name, doc, fields=[...])

ATTR_RE = re.compile(r"#\[prost\((.*)\)\]")
PRIMS = {"String", "Option", "Vec", "BTreeMap", "Box"}


def resolve(module, ty):
    """Resolve a Rust type path in `module` to a message key."""
    cands = [t for t in re.findall(r"((?:(?:super|[a-z_0-9]+)::)*[A-Z][A-Za-z0-9]*)", ty) if t.split("::")[-1] not in PRIMS]
    if not cands:
        return None
    path = cands[-1].split("::")
    if path[0] in ("core", "prost", "alloc"):
        return None
    mod = list(module)
    while path and path[0] == "super":
        mod.pop()
        path.pop(0)
    return ".".join(mod + path)


for path in sorted(glob.glob(os.path.join(PB, "**/mod.rs"), recursive=True)):
    rel = os.path.relpath(os.path.dirname(path), PB)
    module = rel.split(os.sep)
    lines = open(path, encoding="utf-8").read().split("\n")
    cur = None
    doc = []
    attr = None
    pending = None
    for line in lines:
        s = line.strip()
        if pending is not None:
            pending += " " + s
            if s.endswith(",") and pending.count("<") == pending.count(">"):
                cur["fields"].append((attr, pending, doc))
                pending, attr, doc = None, None, []
            continue
        if s.startswith("///"):
            doc.append(s[3:].strip())
            continue
        m = re.match(r"pub struct (\w+) \{", s)
        if m:
            cur = {"module": module, "name": m.group(1), "doc": doc, "fields": []}
            messages[".".join(module + [m.group(1)])] = cur
            doc = []
            continue
        m = re.match(r"pub struct (\w+) \{\}", s)
        if m:
            messages[".".join(module + [m.group(1)])] = {"module": module, "name": m.group(1), "doc": doc, "fields": []}
            doc = []
            continue
        m = ATTR_RE.match(s)
        if m and cur is not None:
            attr = m.group(1)
            continue
        m = re.match(r"pub (r#)?(\w+):(.*)$", s)
        if m and cur is not None and attr is not None:
            text = s
            if s.endswith(",") and s.count("<") == s.count(">"):
                cur["fields"].append((attr, text, doc))
                attr, doc = None, []
            else:
                pending = text
            continue
        if s == "}":
            cur = None
            doc = []
        elif not s.startswith("#["):
            doc = []

# Special (custom JSON) messages, by k8s-pb name.
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "Time",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "apimachinery.pkg.runtime.RawExtension": "RawJson",
    "apimachinery.pkg.api.resource.Quantity": "Quantity",
    "apimachinery.pkg.api.resource.QuantityValue": "Quantity",
    "apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.Json": "RawJson",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.Json": "RawJson",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool": "SchemaOrBool",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JsonSchemaPropsOrBool": "SchemaOrBool",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray": "SchemaOrArray",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JsonSchemaPropsOrArray": "SchemaOrArray",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray": "SchemaOrArray",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JsonSchemaPropsOrStringArray": "SchemaOrArray",
}
# Named Go slice types wrapped by go-to-protobuf in a message { repeated items = 1 }.
for key, msg in messages.items():
    if "+protobuf.nullable=true" in " ".join(msg["doc"]) and [f for f in msg["fields"]]:
        names = [re.match(r"pub (?:r#)?(\w+):", t).group(1) for (_a, t, _d) in msg["fields"]]
        if names == ["items"]:
            SPECIAL[key] = "List"

SCALARS = {"string": "Str", "bool": "Bool", "int32": "I32", "int64": "I64", "double": "F64", "float": "F64"}

order = sorted(messages)
index = {k: i for i, k in enumerate(order)}
stats = {"fields": 0, "json_fallback": 0, "keep_zero": 0, "pointer": 0, "required": 0, "unmatched_ptr": []}


def field_entry(msgkey, msg, attr, text, oadef, ptrs):
    rust = re.match(r"pub (?:r#)?(\w+):", text).group(1)
    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
    n = norm(rust)
    json = None
    required = False
    inline = False
    if oadef is not None and n not in oadef and attr.startswith("message") and "repeated" not in attr:
        sub = messages.get(resolve(msg["module"], text.split(":", 1)[1]))
        subnames = [norm(re.match(r"pub (?:r#)?(\w+):", t).group(1)) for (_a, t, _d) in (sub or {}).get("fields", [])]
        inline = bool(subnames) and all(x in oadef for x in subnames)
    if inline:
        json = ""
    elif n in FIX_JSON:
        json = FIX_JSON[n]
    elif oadef is not None and n in oadef:
        json, required = oadef[n]
    elif n in oa_names:
        json = oa_names[n]
    else:
        parts = rust.split("_")
        json = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
        stats["json_fallback"] += 1
        if os.environ.get("DEBUG"):
            print(f"fallback {msgkey}.{rust} -> {json} (oa={oadef is not None})", file=sys.stderr)
    first = attr.split(",")[0].strip()
    card = "One"
    val = None
    if attr.startswith("btree_map") or attr.startswith("map"):
        kv = re.search(r'"([^"]+)"', attr).group(1).split(",")
        vt = kv[1].strip()
        card = "Map"
        if vt == "message":
            val = ("Msg", resolve(msg["module"], text.split(":", 1)[1].split(",", 1)[1]))
        elif vt == "bytes":
            val = ("Bytes", None)
        else:
            val = (SCALARS[vt], None)
    else:
        if "repeated" in attr:
            card = "Rep"
        elif inline:
            card = "Inline"
        if first == "message":
            val = ("Msg", resolve(msg["module"], text.split(":", 1)[1]))
        elif first.startswith("bytes"):
            val = ("Bytes", None)
        else:
            val = (SCALARS[first], None)
    keep = False
    if card == "One" and val[0] != "Msg":
        if n in ptrs:
            keep = True
            stats["pointer"] += 1
            ptrs.discard(n)
        elif required:
            keep = True
            stats["required"] += 1
    if keep:
        stats["keep_zero"] += 1
    stats["fields"] += 1
    if val[0] == "Msg":
        if val[1] not in index:
            sys.exit(f"unresolved message {val[1]} in {msgkey}.{rust}")
        kind = f"Kind::Msg({index[val[1]]})"
    else:
        kind = f"Kind::{val[0]}"
    return f"F({tag}, {json!r}, {kind}, Card::{card}, {'true' if keep else 'false'})".replace("'", '"')


out = []
out.append("// @generated by hack/gen-protobuf-schema.py from k8s-pb 0.9.0 and k8s-openapi 0.29.0 (v1_33).")
out.append("// DO NOT EDIT. Regenerate with `python3 hack/gen-protobuf-schema.py` (rustfmt skips this file).")
out.append("")
out.append("use super::schema::{Card, Field as F_, Kind, Message, Special};")
out.append("")
out.append("#[allow(non_snake_case)]")
out.append("const fn F(tag: u32, json: &'static str, kind: Kind, card: Card, keep_zero: bool) -> F_ {")
out.append("    F_ { tag, json, kind, card, keep_zero }")
out.append("}")
out.append("")
out.append("/// Every message, sorted by its k8s-pb module path; `Kind::Msg(i)` indexes this.")
out.append(f"pub(crate) static MESSAGES: [Message; {len(order)}] = [")
for key in order:
    msg = messages[key]
    oadef = oa_definition(msg["module"], msg["name"])
    ptrs = pointer_fields(key)
    entries = [field_entry(key, msg, a, t, oadef, ptrs) for (a, t, _d) in msg["fields"]]
    if ptrs:
        stats["unmatched_ptr"].append((key, sorted(ptrs)))
    special = SPECIAL.get(key, "None")
    out.append(f'    Message {{ name: "{key}", special: Special::{special}, fields: &[{", ".join(entries)}] }},')
out.append("];")
out.append("")

# (apiVersion, kind) -> message
gv_rows = []
for key in order:
    msg = messages[key]
    module = msg["module"]
    modrel = "/".join(module)
    version = module[-1]
    groupdir = "/".join(module[:-1])
    if module[:4] == ["apimachinery", "pkg", "apis", "meta"] or module[:2] == ["apimachinery", "pkg"] and module[2] in ("runtime", "util", "api"):
        continue
    group = group_of_dir.get(groupdir)
    if group is None:
        if module[:2] == ["api", "core"]:
            group = ""
        else:
            print(f"warning: no group for {groupdir}", file=sys.stderr)
            continue
    kind = kinds.get((modrel, msg["name"].lower()), msg["name"].replace("Json", "JSON"))
    api_version = f"{group}/{version}" if group else version
    gv_rows.append((api_version, kind, index[key]))
gv_rows.sort()
out.append("/// (apiVersion, kind) -> index into MESSAGES, sorted for binary search.")
out.append(f"pub(crate) static KINDS: [(&str, &str, u16); {len(gv_rows)}] = [")
for av, kd, i in gv_rows:
    out.append(f'    ("{av}", "{kd}", {i}),')
out.append("];")
out.append("")
meta_rows = sorted(
    (messages[k]["name"], index[k]) for k in order if k.startswith("apimachinery.pkg.apis.meta.v1.")
)
out.append("/// meta/v1 kinds registered in every group version (DeleteOptions, ...), by kind.")
out.append(f"pub(crate) static META_KINDS: [(&str, u16); {len(meta_rows)}] = [")
for kd, i in meta_rows:
    out.append(f'    ("{kd}", {i}),')
out.append("];")
out.append("")

with open(OUT, "w", encoding="utf-8") as f:
    f.write("\n".join(out))

print(
    f"{len(order)} messages, {stats['fields']} fields, {len(gv_rows)} kinds; "
    f"zero kept for {stats['keep_zero']} scalars ({stats['pointer']} pointer, {stats['required']} required); "
    f"{stats['json_fallback']} JSON names derived from Rust names",
    file=sys.stderr,
)
for key, names in stats["unmatched_ptr"]:
    if key.startswith("api.") or key.startswith("apimachinery"):
        print(f"note: pointer names not found in {key}: {names}", file=sys.stderr)
