"""Runbook steps several workflows share: images, Deployments, CronJobs."""
