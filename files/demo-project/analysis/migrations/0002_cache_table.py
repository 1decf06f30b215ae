from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    # The DatabaseCache table is not a model, so `migrate` would not create it
    # on its own; doing it here means `migrate` alone prepares a new database.
    # createcachetable skips tables that already exist.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [
        ("analysis", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
