variable "image" {
  description = "flexsync image built from ./Dockerfile, pinned by digest (registry/flexsync@sha256:...)."
  type        = string
  default     = "flexsync:0.1.0"
}

variable "namespace" {
  description = "Namespace of the broker-sync providers (holds the Secret broker-sync-secrets)."
  type        = string
  default     = "broker-sync"
}

variable "data_claim_name" {
  description = "The existing encrypted PVC mounted at /data: in the stack, kubernetes_persistent_volume_claim.data_encrypted.metadata[0].name."
  type        = string
  default     = "broker-sync-data"
}

variable "pushgateway_url" {
  description = "Pushgateway base URL (not in Vault secret/broker-sync)."
  type        = string
  default     = "http://prometheus-prometheus-pushgateway.monitoring:9091"
}

variable "secret_name" {
  description = "Secret synced by the ExternalSecret from Vault secret/broker-sync (lowercase keys)."
  type        = string
  default     = "broker-sync-secrets"
}
