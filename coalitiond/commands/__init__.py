"""What a committee orders: signed client envelopes and the client ACL (`envelope`), the
command vocabulary clients sign (`client`), commands only members propose (`member`), and
the replay-protection set the executor keeps (`dedup`). Pure: no I/O."""
