locals {
  labels = {
    app                      = "broker-sync-ibkr"
    "app.kubernetes.io/name" = "flexsync"
  }
}

# The nightly sync: IBKR Flex -> DuckDB -> dbt -> Wealthfolio + Pushgateway. Field for field
# deploy/cronjob.yaml (tests/test_deploy.py compares them); comments there say why.
resource "kubernetes_cron_job_v1" "ibkr" {
  metadata {
    name      = "broker-sync-ibkr"
    namespace = var.namespace
    labels    = local.labels
  }

  spec {
    schedule                      = "0 2 * * *"
    timezone                      = "Europe/London"
    concurrency_policy            = "Forbid"
    starting_deadline_seconds     = 3600
    successful_jobs_history_limit = 3
    failed_jobs_history_limit     = 3

    job_template {
      metadata {
        labels = local.labels
      }

      spec {
        backoff_limit              = 1
        ttl_seconds_after_finished = 259200
        active_deadline_seconds    = 3600

        # A retry cannot fix configuration (exit 2) or the account guard (exit 3).
        pod_failure_policy {
          rule {
            action = "FailJob"
            on_exit_codes {
              container_name = "flexsync"
              operator       = "In"
              values         = [2, 3]
            }
          }
        }

        template {
          metadata {
            labels = local.labels
          }

          spec {
            restart_policy                  = "Never"
            automount_service_account_token = false
            enable_service_links            = false

            security_context {
              run_as_non_root        = true
              run_as_user            = 10001
              run_as_group           = 10001
              fs_group               = 10001
              fs_group_change_policy = "OnRootMismatch"
              seccomp_profile {
                type = "RuntimeDefault"
              }
            }

            container {
              name              = "flexsync"
              image             = var.image
              image_pull_policy = "IfNotPresent"
              args              = ["sync"]

              # The settings of README.md#configuration, from the ExternalSecret-synced
              # Secret (Vault secret/broker-sync, shared with the other broker-sync
              # providers: its keys are lowercase).
              env {
                name = "IBKR_FLEX_TOKEN"
                value_from {
                  secret_key_ref {
                    name = var.secret_name
                    key  = "ibkr_flex_token"
                  }
                }
              }
              env {
                name = "IBKR_FLEX_QUERY_ID"
                value_from {
                  secret_key_ref {
                    name = var.secret_name
                    key  = "ibkr_flex_query_id"
                  }
                }
              }
              env {
                name = "IBKR_ACCOUNT_ID"
                value_from {
                  secret_key_ref {
                    name = var.secret_name
                    key  = "ibkr_account_id"
                  }
                }
              }
              env {
                name = "IBKR_ACCOUNT_ID_UPSTREAM"
                value_from {
                  secret_key_ref {
                    name = var.secret_name
                    key  = "ibkr_account_id_upstream"
                  }
                }
              }
              env {
                name = "WF_BASE_URL"
                value_from {
                  secret_key_ref {
                    name = var.secret_name
                    key  = "wf_base_url"
                  }
                }
              }
              env {
                name = "WF_PASSWORD"
                value_from {
                  secret_key_ref {
                    name = var.secret_name
                    key  = "wf_password"
                  }
                }
              }
              # Accepted and ignored (Wealthfolio has no user name); kept for old secrets.
              env {
                name = "WF_USERNAME"
                value_from {
                  secret_key_ref {
                    name     = var.secret_name
                    key      = "wf_username"
                    optional = true
                  }
                }
              }
              # Not in Vault secret/broker-sync: the cluster's Pushgateway.
              env {
                name  = "PUSHGATEWAY_URL"
                value = var.pushgateway_url
              }
              # Paths tied to the volume mounts below; /data is the image's baked dbt parse.
              env {
                name  = "BROKER_SYNC_DATA_DIR"
                value = "/data"
              }
              env {
                name  = "WF_SESSION_PATH"
                value = "/data/.wealthfolio-session"
              }
              env {
                name  = "PUSHGATEWAY_JOB"
                value = "broker-sync-ibkr"
              }
              env {
                name  = "PUSHGATEWAY_ACCOUNT_LABEL"
                value = "ibkr-uk"
              }
              # JSON lines for Loki (deploy/loki-rules.yaml).
              env {
                name  = "FLEXSYNC_LOG_FORMAT"
                value = "json"
              }
              env {
                name  = "DO_NOT_TRACK"
                value = "1"
              }
              env {
                name  = "DBT_SEND_ANONYMOUS_USAGE_STATS"
                value = "false"
              }
              # dbt writes target/ and logs/ on every run: on the /tmp emptyDir.
              env {
                name  = "DBT_TARGET_PATH"
                value = "/tmp/dbt/target"
              }
              env {
                name  = "DBT_LOG_PATH"
                value = "/tmp/dbt/logs"
              }
              env {
                name  = "TMPDIR"
                value = "/tmp"
              }

              resources {
                requests = {
                  cpu    = "100m"
                  memory = "128Mi"
                }
                limits = {
                  memory = "256Mi"
                }
              }

              security_context {
                run_as_non_root            = true
                run_as_user                = 10001
                run_as_group               = 10001
                read_only_root_filesystem  = true
                allow_privilege_escalation = false
                privileged                 = false
                capabilities {
                  drop = ["ALL"]
                }
                seccomp_profile {
                  type = "RuntimeDefault"
                }
              }

              volume_mount {
                name       = "data"
                mount_path = "/data"
              }
              volume_mount {
                name       = "tmp"
                mount_path = "/tmp"
              }
            }

            volume {
              name = "data"
              persistent_volume_claim {
                claim_name = var.data_claim_name
              }
            }
            volume {
              name = "tmp"
              empty_dir {
                size_limit = "512Mi"
              }
            }
          }
        }
      }
    }
  }

  lifecycle {
    # A Kyverno webhook mutates the pod template's dns_config: not a drift to undo.
    ignore_changes = [
      spec[0].job_template[0].spec[0].template[0].spec[0].dns_config,
    ]
  }
}

# The alert rules: deploy/prometheus-rules.yaml is their one home (promtool-tested there).
resource "kubernetes_manifest" "ibkr_rules" {
  manifest = {
    apiVersion = "monitoring.coreos.com/v1"
    kind       = "PrometheusRule"
    metadata = {
      name      = "broker-sync-ibkr"
      namespace = var.namespace
      labels    = local.labels
    }
    spec = yamldecode(file("${path.module}/../prometheus-rules.yaml"))
  }
}

# The namespace enforces the "restricted" Pod Security Standard (deploy/namespace.yaml):
# labels added to the stack's existing namespace.
resource "kubernetes_labels" "namespace_pod_security" {
  api_version = "v1"
  kind        = "Namespace"
  metadata {
    name = var.namespace
  }
  labels = {
    "pod-security.kubernetes.io/enforce"         = "restricted"
    "pod-security.kubernetes.io/enforce-version" = "latest"
    "pod-security.kubernetes.io/warn"            = "restricted"
    "pod-security.kubernetes.io/audit"           = "restricted"
  }
}

# Egress to DNS, Wealthfolio, the Pushgateway and https only; no ingress
# (deploy/networkpolicy.yaml, where each rule is explained).
resource "kubernetes_network_policy_v1" "ibkr_egress" {
  metadata {
    name      = "broker-sync-ibkr-egress"
    namespace = var.namespace
    labels    = local.labels
  }

  spec {
    pod_selector {
      match_labels = {
        app = "broker-sync-ibkr"
      }
    }
    policy_types = ["Ingress", "Egress"]

    egress {
      to {
        namespace_selector {
          match_labels = {
            "kubernetes.io/metadata.name" = "kube-system"
          }
        }
        pod_selector {
          match_labels = {
            k8s-app = "kube-dns"
          }
        }
      }
      ports {
        protocol = "UDP"
        port     = 53
      }
      ports {
        protocol = "TCP"
        port     = 53
      }
    }

    egress {
      to {
        namespace_selector {
          match_labels = {
            "kubernetes.io/metadata.name" = "wealthfolio"
          }
        }
      }
      ports {
        protocol = "TCP"
        port     = 8088
      }
    }

    egress {
      to {
        namespace_selector {
          match_labels = {
            "kubernetes.io/metadata.name" = "monitoring"
          }
        }
      }
      ports {
        protocol = "TCP"
        port     = 9091
      }
    }

    egress {
      to {
        ip_block {
          cidr = "0.0.0.0/0"
          except = [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "100.64.0.0/10",
          ]
        }
      }
      ports {
        protocol = "TCP"
        port     = 443
      }
    }
  }
}
