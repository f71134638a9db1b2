-- Ticketflow patch: the headers of every record in an offset range, for a
-- fetch that read those records (one statement instead of one per record).

-- prepare header_fetch_between (text, text, integer, integer, integer) as

select h.offset_id, h.k, h.v
from header h
where h.topition = (
    select tp.id
    from cluster c
    join topic t on t.cluster = c.id
    join topition tp on tp.topic = t.id
    where c.name = $1
    and t.name = $2
    and tp.partition = $3)
and h.offset_id >= $4
and h.offset_id <= $5
order by h.offset_id, h.ordinal;
