# ConspiracyOS in a container whose PID 1 is systemd: the original's verbs over podman
# (docs/DEPLOY.md, "The container image"). As root (rootful podman).
#
#   make image [PROFILE=minimal]    base images from the cached Debian roots, then podman build
#   make run                        start the container (keys from .env, volumes for /srv/con, /etc/con)
#   make task MSG="..."             drop a task into /srv/con/inbox; the answer is printed
#   make stop                       stop and remove the container (the volumes stay)
#   make deploy                     image, stop, run: the new image on the same volumes
#   make status | logs | shell
PROFILE ?= default
NAME ?= conspiracyos
IMAGE ?= localhost/conspiracyos:$(PROFILE)
ENV_FILE ?= .env
PODMAN ?= podman
# runc: crun refuses the hybrid cgroup layout (cgroup v1 controllers beside an empty v2 tree)
# some hosts have; runc runs both. The limits stay within what an unprivileged-for-rlimits
# root may set (podman's defaults are above it on such hosts).
RUNTIME ?= runc
ULIMITS ?= --ulimit nofile=16384:16384 --ulimit nproc=32768:32768
# con bootstrap applies the network door (nftables, docs/NETWORK.md) in the container's own
# network namespace, and fails closed without this capability.
CAPS ?= --cap-add NET_ADMIN
SECRET = $(NAME)-env

.PHONY: image run task stop deploy status logs shell

image:
	scripts/make-base-image.sh
	$(PODMAN) --runtime $(RUNTIME) build --network=none $(ULIMITS) --build-arg PROFILE=$(PROFILE) -t $(IMAGE) .
	@# The build stage's images are left untagged (dangling): about 640 MB each, nothing reuses them.
	@$(PODMAN) image prune -f >/dev/null

# Keys: .env becomes the podman secret $(SECRET), mounted 0400 at /run/secrets/conspiracyos-env;
# the image's set-up hands its CON_* lines to the model gateway (/etc/con/env) and nothing else.
run:
	@$(PODMAN) secret rm $(SECRET) >/dev/null 2>&1 || true
	@if [ -f $(ENV_FILE) ]; then $(PODMAN) secret create $(SECRET) $(ENV_FILE) >/dev/null; \
		echo "make run: keys from $(ENV_FILE) as the podman secret $(SECRET)"; fi
	$(PODMAN) --runtime $(RUNTIME) run -d --name $(NAME) --hostname $(NAME) $(ULIMITS) $(CAPS) \
		--systemd=always --stop-signal SIGRTMIN+3 \
		-v $(NAME)-srv:/srv/con -v $(NAME)-etc:/etc/con \
		$$( [ -f $(ENV_FILE) ] && echo --secret $(SECRET),target=conspiracyos-env,mode=0400 ) \
		$(RUN_ARGS) $(IMAGE)
	@echo "make run: waiting for the fabric"; \
	for i in $$(seq 120); do \
		$(PODMAN) exec $(NAME) systemctl is-active -q conspiracyos.target 2>/dev/null && \
		$(PODMAN) exec $(NAME) systemctl is-active -q con-image-setup.service 2>/dev/null && exit 0; sleep 1; \
	done; echo "make run: the fabric did not come up; see 'make logs'" >&2; exit 1

# The task file is written by root inside the container (a verified task); the answer is the
# concierge's response file. MSG goes through the environment, never through a shell command line.
task:
	@test -n "$(MSG)" || { echo 'usage: make task MSG="..."' >&2; exit 2; }
	@$(PODMAN) exec -e MSG -e ID=make-$$(date +%s%N) $(NAME) sh -c \
		'printf "%s\n" "$$MSG" >/srv/con/inbox/.$$ID.tmp && mv /srv/con/inbox/.$$ID.tmp /srv/con/inbox/$$ID.task && \
		 for i in $$(seq 600); do [ -e /srv/con/agents/concierge/outbox/$$ID.response ] && \
		 exec cat /srv/con/agents/concierge/outbox/$$ID.response; sleep 0.5; done; \
		 echo "no answer within 300 s (task $$ID)" >&2; exit 1'
export MSG

stop:
	-$(PODMAN) stop -t 100 $(NAME)
	-$(PODMAN) rm $(NAME)
	-@$(PODMAN) secret rm $(SECRET) >/dev/null 2>&1

deploy: image stop run

status:
	$(PODMAN) exec $(NAME) con status

logs:
	$(PODMAN) exec $(NAME) journalctl --no-pager -n 100 -u 'con-*' -u conspiracyos.target

shell:
	$(PODMAN) exec -it $(NAME) bash
