"""post slugs and a non-blank title check

Revision ID: d0a7c5e2b9f6
Revises: b6e3f1a0c8d4
Create Date: 2024-04-15 10:02:39.830116

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'd0a7c5e2b9f6'
down_revision = 'b6e3f1a0c8d4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('slug', sa.String(length=220), nullable=True))

    op.execute(
        "UPDATE posts SET slug = trim(both '-' from "
        "lower(regexp_replace(title, '[^A-Za-z0-9]+', '-', 'g'))) || '-' || id"
    )

    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_posts_slug'), ['slug'], unique=True)
        batch_op.create_check_constraint('title_not_blank', 'length(trim(title)) > 0')


def downgrade():
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_posts_title_not_blank'), type_='check')
        batch_op.drop_index(batch_op.f('ix_posts_slug'))
        batch_op.drop_column('slug')
