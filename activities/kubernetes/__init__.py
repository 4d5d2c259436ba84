"""Kubernetes and Istio activities, one module per subject; an activity lives in the
module its name's prefix says (`istio.*` in istio.py, `cronjob.*` in cronjob.py,
`hook.*` in hooks.py,
`kubernetes.*` in the others):

- client.py     the per-environment clusters and the generic verbs every call goes through
- release.py    the one path that applies a release to a pod template (or restores one)
- workloads.py  Deployments: objects of a service, release, rollout, revisions, scale
- cronjob.py    cronjob services: release, run once as a Job, stop a run
- hooks.py      release hooks: start a hook's Job (cronjob.wait_job waits), stop it
- scale.py      replicas, resources and their override annotations
- volumes.py    the claims and ConfigMaps a service mounts
- teardown.py   decommission: footprint, scale to zero and back, delete
- istio.py      routes: canary weights; a service's routes removed and restored
"""
