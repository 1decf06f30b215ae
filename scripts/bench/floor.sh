#!/usr/bin/env bash
# The floor a converge is compared with: the same distribution packages
# installed and the same services started, by a plain script with no Ansible,
# no checks and no idempotence. Runs inside one fresh host, as root:
#   floor.sh broker|database|web|worker|beat
# The values come from the environment (bench.py passes the scenario's).
set -euo pipefail
tier=$1
export DEBIAN_FRONTEND=noninteractive
APP=workbench

apt_install() {
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

app_release() {
  apt_install python3-venv python3-packaging logrotate
  id "$APP" >/dev/null 2>&1 || useradd --system --home-dir "/srv/$APP" --shell /usr/sbin/nologin "$APP"
  mkdir -p "/srv/$APP" /etc/$APP
  tar -C "/srv/$APP" -xf /opt/bench-project.tar
  cat >/etc/$APP/env <<ENV
DJANGO_SETTINGS_MODULE=$APP.settings
DJANGO_SECRET_KEY=$FLOOR_SECRET_KEY
DJANGO_ALLOWED_HOSTS=localhost
DATABASE_URL=$FLOOR_DATABASE_URL
CELERY_BROKER_URL=$FLOOR_BROKER_URL
DJANGO_STATIC_ROOT=/srv/$APP/static
ENV
  python3 -m venv "/srv/$APP/venv"
  "/srv/$APP/venv/bin/pip" install --quiet -r "/srv/$APP/requirements.txt"
  chown -R "$APP:$APP" "/srv/$APP"
}

app_unit() {  # name, command...
  local name=$1; shift
  systemd-run --quiet --unit "$name" --property User=$APP --property EnvironmentFile=/etc/$APP/env \
    --property WorkingDirectory=/srv/$APP --property RuntimeDirectory=$APP "$@"
}

case $tier in
  broker)
    apt_install logrotate python3-requests e2fsprogs
    mkfs.ext4 -q -F /dev/vdb
    mkdir -p /var/lib/rabbitmq/mnesia
    mount /dev/vdb /var/lib/rabbitmq/mnesia
    apt_install rabbitmq-server
    chown rabbitmq:rabbitmq /var/lib/rabbitmq/mnesia
    systemctl restart rabbitmq-server
    rabbitmqctl -q add_vhost $APP
    rabbitmqctl -q add_user $APP "$FLOOR_BROKER_PASSWORD"
    rabbitmqctl -q set_permissions -p $APP $APP '.*' '.*' '.*'
    rabbitmqctl -q delete_user guest
    ;;
  database)
    apt_install postgresql python3-psycopg2
    conf=$(ls -d /etc/postgresql/*/main)
    echo "listen_addresses = '*'" >"$conf/conf.d/floor.conf"
    echo "host $APP $APP 0.0.0.0/0 scram-sha-256" >>"$conf/pg_hba.conf"
    systemctl restart "postgresql@$(basename "$(dirname "$conf")")-main"
    runuser -u postgres -- psql -q -c "CREATE USER $APP PASSWORD '$FLOOR_DATABASE_PASSWORD'"
    runuser -u postgres -- createdb -O $APP $APP
    ;;
  web)
    apt_install nginx
    app_release
    (cd /srv/$APP && set -a && . /etc/$APP/env && set +a \
      && runuser -u $APP -- venv/bin/python manage.py migrate --noinput -v 0 \
      && runuser -u $APP -- venv/bin/python manage.py collectstatic --noinput -v 0)
    app_unit gunicorn "/srv/$APP/venv/bin/gunicorn" $APP.wsgi:application --workers 3 --bind unix:/run/$APP/gunicorn.sock
    cat >/etc/nginx/sites-enabled/default <<SITE
server {
  listen 80 default_server;
  location /static/ { alias /srv/$APP/static/; }
  location / { proxy_pass http://unix:/run/$APP/gunicorn.sock; proxy_set_header Host localhost; }
}
SITE
    systemctl reload nginx
    ;;
  worker)
    app_release
    app_unit celery-worker "/srv/$APP/venv/bin/celery" -A $APP worker --concurrency 2 --max-tasks-per-child 1000
    ;;
  beat)
    app_release
    app_unit celery-beat "/srv/$APP/venv/bin/celery" -A $APP beat --schedule /tmp/celerybeat-schedule
    ;;
  *)
    echo "usage: floor.sh broker|database|web|worker|beat" >&2
    exit 2
    ;;
esac

# The floor counts only if its services really run.
case $tier in
  broker) units=(rabbitmq-server) ;;
  database) units=("postgresql@$(ls /etc/postgresql)-main") ;;
  web) units=(gunicorn nginx) ;;
  worker) units=(celery-worker) ;;
  beat) units=(celery-beat) ;;
esac
for unit in "${units[@]}"; do
  systemctl is-active --quiet "$unit" || { echo "$unit is not running" >&2; exit 1; }
done
if [ "$tier" = web ]; then
  python3 - <<'CHECK'
import time, urllib.request
for attempt in range(50):
    try:
        urllib.request.urlopen("http://localhost/health/", timeout=2)
        break
    except OSError:
        time.sleep(0.2)
else:
    raise SystemExit("the application does not answer /health/ through nginx")
CHECK
fi
