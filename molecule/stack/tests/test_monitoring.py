"""What watches the system: Prometheus scrapes every host and the broker's queues, the alert rules built from
the inventory pass promtool and know this system's queues and pools, a backlog with the workers stopped
makes one grouped notification at the receiver, then a resolved one once the workers drain it, and a thousand
failing tasks make one notification, not a thousand; Flower, behind nginx's password, lists both workers and
the tasks each ran. (The disk alarm's alert is checked with the disk alarm, in test_faults.)"""

import base64
import datetime
import json
import shlex
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

from bundletest.common import address, django, http, on, wait_for
from stack import BEAT, FIXTURES, MONITOR, WORKERS, monitor_api, notifications, start_job, wait_finished

# Every host of a tier (the spare is none until add-worker.yml makes it a worker).
SYSTEM_HOSTS = {"stack-broker", "stack-db", "stack-web", *WORKERS, MONITOR}


def query(host, expression):
    """The values of an instant PromQL query."""
    result = monitor_api(host, 9090, "/api/v1/query?query=" + urllib.parse.quote(expression))["data"]["result"]
    return [float(sample["value"][1]) for sample in result]


def written_rules(host):
    """The alert rules the prometheus role wrote on the monitoring host, by alert name."""
    text = on(host, MONITOR).file("/etc/prometheus/rules/bundle.yml").content_string
    return {rule["alert"]: rule for rule in yaml.safe_load(text)["groups"][0]["rules"]}


def test_the_written_configuration_passes_promtool_and_amtool_and_knows_the_system(host):
    monitor = on(host, MONITOR)
    monitor.check_output("promtool check config /etc/prometheus/prometheus.yml")
    monitor.check_output("promtool check rules /etc/prometheus/rules/bundle.yml")
    monitor.check_output("amtool check-config /etc/prometheus/alertmanager.yml")
    rules = written_rules(host)
    assert {"QueueBacklog", "QueueWithoutConsumer", "FewerConsumersThanPools", "DeadLetters", "BrokerDiskAlarm",
            "StoreVolumeFillingUp", "HostDown", "DatabaseDown", "DatabaseConnectionsNearLimit", "WebErrors",
            "DeliveryHeldNearConsumerTimeout", "TaskFailures", "BeatSilent"} <= set(rules), sorted(rules)
    assert 'queue=~"celery"' in rules["QueueBacklog"]["expr"] and "> 100" in rules["QueueBacklog"]["expr"]
    # Two worker hosts with one pool each on the celery queue: two consumers expected.
    assert 'label_replace(vector(2), "queue", "celery"' in rules["FewerConsumersThanPools"]["expr"]
    assert all(rule["annotations"]["runbook"] for rule in rules.values())


def test_a_delivery_held_near_the_consumer_timeout_alerts_and_a_queue_that_keeps_acking_does_not(host):
    """promtool's rule test on the written rules: an hour of a stuck queue's and a busy queue's series, in a second."""
    rules = written_rules(host)
    held = rules["DeliveryHeldNearConsumerTimeout"]
    # The broker's default consumer timeout (1800 s): the alert waits 80 % of it.
    assert held["for"] == "1440s"
    instance = 'instance="stack-broker:15692"'
    series = {
        # One task out for the whole hour, nothing acknowledged.
        f'rabbitmq_detailed_queue_messages_unacked{{queue="celery",{instance}}}': "1x60",
        f'rabbitmq_detailed_queue_messages_acked_total{{queue="celery",{instance}}}': "7x60",
        # Not a queue the workers consume: never alerts.
        f'rabbitmq_detailed_queue_messages_unacked{{queue="celery.dead-letter",{instance}}}': "1x60",
        f'rabbitmq_detailed_queue_messages_acked_total{{queue="celery.dead-letter",{instance}}}': "0x60",
    }
    expected = [{"exp_labels": {"severity": held["labels"]["severity"], "queue": "celery"},
                 "exp_annotations": {"runbook": held["annotations"]["runbook"],
                                     "summary": held["annotations"]["summary"].replace("{{ $labels.queue }}", "celery")}}]
    busy = {  # Four tasks always out, and acknowledged steadily: a busy queue, not a stuck one.
        f'rabbitmq_detailed_queue_messages_unacked{{queue="celery",{instance}}}': "4x60",
        f'rabbitmq_detailed_queue_messages_acked_total{{queue="celery",{instance}}}': "0+30x60",
    }
    unit_test = {
        "rule_files": ["/etc/prometheus/rules/bundle.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": [{"series": k, "values": v} for k, v in series.items()],
             "alert_rule_test": [
                 {"eval_time": "20m", "alertname": "DeliveryHeldNearConsumerTimeout", "exp_alerts": []},
                 {"eval_time": "30m", "alertname": "DeliveryHeldNearConsumerTimeout", "exp_alerts": expected}]},
            {"interval": "1m", "input_series": [{"series": k, "values": v} for k, v in busy.items()],
             "alert_rule_test": [{"eval_time": "50m", "alertname": "DeliveryHeldNearConsumerTimeout", "exp_alerts": []}]},
        ],
    }
    promtool_rule_test(host, "held-delivery", unit_test)


def promtool_rule_test(host, name, unit_test):
    """promtool's unit test of the written rules: series given, alerts expected at given times."""
    monitor = on(host, MONITOR)
    monitor.check_output(f"printf %s {shlex.quote(yaml.safe_dump(unit_test))} > /tmp/{name}-test.yml")
    run = monitor.run(f"promtool test rules /tmp/{name}-test.yml")
    assert run.rc == 0, run.stdout + run.stderr


def test_a_silent_beat_alerts_after_its_window_and_a_just_installed_or_ticking_one_does_not(host):
    """promtool's rule test on the written BeatSilent rule, with the scenario's window (2m, the heartbeat every 30 s)."""
    silent = written_rules(host)["BeatSilent"]
    assert "[2m]" in silent["expr"] and silent["for"] == "1m", silent
    series = 'celery_beat_sends_total{instance="stack-worker1:3903",job="mtail"}'
    alert = {"exp_labels": silent["labels"], "exp_annotations": silent["annotations"]}

    def case(values, *expected):
        return {"interval": "30s", "input_series": [{"series": series, "values": values}],
                "alert_rule_test": [{"eval_time": at, "alertname": "BeatSilent", "exp_alerts": [alert] if fires else []}
                                    for at, fires in expected]}

    promtool_rule_test(host, "beat-silent", {"rule_files": ["/etc/prometheus/rules/bundle.yml"], "evaluation_interval": "15s", "tests": [
        # A send every 30 s for 10 minutes, then none: still quiet 1 minute later, firing once the window and `for` passed.
        case("0+1x20 20x20", ("11m", False), ("13m", True)),
        # A beat that never sends: not while mtail is younger than the window, then firing.
        case("0x20", ("2m", False), ("4m", True)),
        # A beat that keeps sending never fires.
        case("0+1x60", ("29m", False)),
    ]})


def test_every_host_and_the_broker_s_queues_are_scraped(host):
    def targets():
        return monitor_api(host, 9090, "/api/v1/targets")["data"]["activeTargets"]

    assert wait_for(lambda: all(t["health"] == "up" for t in targets()), timeout=60), \
        [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets() if t["health"] != "up"]
    nodes = {t["labels"]["instance"].split(":")[0] for t in targets() if t["labels"]["job"] == "node"}
    assert nodes == SYSTEM_HOSTS
    by_job = lambda job: {t["labels"]["instance"] for t in targets() if t["labels"]["job"] == job}  # noqa: E731
    assert by_job("postgres") == {"stack-db:9187"}
    assert by_job("flower") == {"127.0.0.1:5555"}
    assert by_job("mtail") == {"stack-web:3903", *(f"{name}:3903" for name in WORKERS)}
    # The workers' and beat's logs are read (adm may read them): the earlier tests' tasks, beat's heartbeats.
    assert wait_for(lambda: len([v for v in query(host, "celery_tasks_succeeded_total") if v > 0]) == len(WORKERS), timeout=60), \
        query(host, "celery_tasks_succeeded_total")
    assert wait_for(lambda: query(host, f'celery_beat_sends_total{{instance="{BEAT}:3903"}}') > [0.0], timeout=60)
    assert len(query(host, "celery_beat_sends_total")) == 1, "a host that runs no beat counts beat's sends"
    # The exporter reaches the server (its own target is up even when it cannot) and reads its settings.
    assert wait_for(lambda: query(host, "pg_up") == [1.0], timeout=60), query(host, "pg_up")
    assert query(host, "pg_settings_max_connections") == [100.0]
    assert query(host, "sum(pg_stat_activity_count)")[0] >= 1
    # One consumer per pool on each worker host, once the earlier tests' paused or restarted workers are back
    # and a scrape has seen them (the first answer may be a few seconds old).
    def consumers():
        return query(host, 'rabbitmq_detailed_queue_consumers{queue="celery"}')

    assert wait_for(lambda: consumers() == [2.0], timeout=90), \
        f"Prometheus sees {consumers()} consumers of celery; the broker lists: " + \
        on(host, "stack-broker").check_output("rabbitmqctl --quiet list_consumers -p workbench")


def flower(host, path, password=None):
    """(status, body) of a request to Flower's port behind nginx on the monitoring host, from the controller."""
    request = urllib.request.Request(f"http://{address(on(host, MONITOR))}:5556{path}")
    if password is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"ops:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_flower_lists_both_workers_and_the_tasks_each_ran_and_refuses_a_request_without_the_password(host):
    password = FIXTURES["all"]["fixture_flower_password"]
    assert flower(host, "/")[0] == 401
    assert flower(host, "/api/workers", password="not-the-password")[0] == 401
    status, body = flower(host, "/", password=password)
    assert status == 200 and "Flower" in body
    # The pools answer Flower's broadcast (the inspect it sends on refresh).
    def workers():
        return json.loads(flower(host, "/api/workers?refresh=1", password=password)[1])

    assert wait_for(lambda: {name.split("@")[1] for name in workers()} >= set(WORKERS), timeout=60), sorted(workers())
    # Task events: the parts of a job, each listed with the worker that ran it, both workers among them.
    wait_finished(host, [start_job(host, 40)])

    def ran_by():
        tasks = json.loads(flower(host, "/api/tasks?limit=1000&state=SUCCESS", password=password)[1])
        return {task["worker"].split("@")[1] for task in tasks.values() if task.get("worker")}

    assert wait_for(lambda: ran_by() >= set(WORKERS), timeout=60), ran_by()


def test_every_5xx_the_web_answers_is_counted_and_the_error_rule_reads_it(host):
    """Gunicorn stopped behind nginx: each request is a 502 in nginx's log, counted by mtail, scraped by Prometheus."""
    def answered_502():
        return sum(query(host, 'nginx_http_responses_total{status="502",instance="stack-web:3903"}'))

    before = answered_502()
    host.check_output("systemctl stop gunicorn.socket gunicorn.service")
    try:
        # One first, seen by a scrape: a rate needs the series before the burst (mtail makes it at its first 502).
        statuses = [http(host, "/health/")[0]]
        assert wait_for(lambda: answered_502() > before, timeout=60), "the first 502 was never scraped"
        statuses += [http(host, "/health/")[0] for _ in range(29)]
    finally:
        host.check_output("systemctl start gunicorn.socket")
    assert statuses == [502] * 30, statuses
    assert http(host, "/health/")[0] == 200
    assert wait_for(lambda: answered_502() - before == 30, timeout=60), answered_502() - before
    rules = written_rules(host)
    # The rule's ratio, without its threshold, on the live series: the names and labels it reads exist.
    share = query(host, rules["WebErrors"]["expr"].rsplit(">", 1)[0])
    assert share and share[0] > 0, share


def test_a_backlog_with_the_workers_stopped_makes_one_grouped_notification_then_a_resolved_one(host):
    since = datetime.datetime.now(datetime.timezone.utc).isoformat()
    workers = [on(host, name) for name in WORKERS]
    for worker in workers:
        worker.check_output("systemctl stop celery-worker@default")
    try:
        job = start_job(host, 300)
        assert wait_for(lambda: notifications(host, "QueueBacklog", since), timeout=180), \
            f"no backlog notification; alerts: {monitor_api(host, 9093, '/api/v2/alerts')}"
        first = notifications(host, "QueueBacklog", since)[0]
        assert first["status"] == "firing" and first["groupLabels"] == {"alertname": "QueueBacklog", "queue": "celery"}
        assert first["alerts"][0]["annotations"]["runbook"]
        assert wait_for(lambda: notifications(host, "QueueWithoutConsumer", since), timeout=60)
        # The backlog stays past the threshold: still one notification for its group.
        time.sleep(20)
        assert [n["status"] for n in notifications(host, "QueueBacklog", since)] == ["firing"]
    finally:
        for worker in workers:
            worker.check_output("systemctl start celery-worker@default")
    state = wait_finished(host, [job])[job]
    assert (state["done"], state["failed"]) == (300, 0), state
    # Resolved at the group's next interval (30 s in the scenario).
    statuses = lambda: [n["status"] for n in notifications(host, "QueueBacklog", since)]  # noqa: E731
    assert wait_for(lambda: statuses() == ["firing", "resolved"], timeout=240), statuses()
    print(f"backlog of 300 with the workers stopped: notifications {statuses()}")


def test_a_thousand_failing_tasks_are_each_counted_and_make_one_notification(host):
    """Task-error mail floods: here the failures are counted from the workers' logs and the receiver hears once."""
    def failed():
        return sum(query(host, 'celery_tasks_total{task="analysis.tasks.noop",outcome="failed"}'))

    since = datetime.datetime.now(datetime.timezone.utc).isoformat()
    before = failed()
    # A task called with arguments it does not take fails in the worker (a release mismatch looks the same).
    sent = django(on(host, WORKERS[0]), "from workbench.celery import app; "
                  "print(len([app.send_task('analysis.tasks.noop', args=[n]) for n in range(1000)]))")
    assert sent == 1000
    assert wait_for(lambda: failed() - before == 1000, timeout=180), f"{failed() - before} failures counted of 1000"
    assert wait_for(lambda: notifications(host, "TaskFailures", since), timeout=120), \
        f"no failure notification; alerts: {monitor_api(host, 9093, '/api/v2/alerts')}"
    # The group interval is 30 s: a second notification could only come after it.
    time.sleep(20)
    sent = notifications(host, "TaskFailures", since)
    assert [n["status"] for n in sent] == ["firing"] and len(sent[0]["alerts"]) == 1, sent
    assert sent[0]["alerts"][0]["annotations"]["runbook"]
    print(f"1000 failing tasks: {failed() - before:.0f} failures counted, {len(sent)} notification")
