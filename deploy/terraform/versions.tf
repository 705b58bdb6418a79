# flexsync's nightly CronJob for the broker-sync stack (infra/stacks/broker-sync), the
# Terraform twin of deploy/cronjob.yaml: tests/test_deploy.py checks they agree field
# for field, and checkov scans both (`make test`).
terraform {
  required_version = ">= 1.5"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.23"
    }
  }
}
