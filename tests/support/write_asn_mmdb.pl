# Writes a MaxMind GeoLite2-ASN-style .mmdb with MaxMind's own writer (Debian package
# libmaxmind-db-writer-perl), for tests of the provisioner's mmdb reading.
# Usage: perl write_asn_mmdb.pl OUT.mmdb < lines of "network,asn,organisation"
use strict;
use warnings;
use MaxMind::DB::Writer::Tree;
my %types = (
    autonomous_system_number       => 'uint32',
    autonomous_system_organization => 'utf8_string',
);
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version            => 6,
    record_size           => 24,
    database_type         => 'GeoLite2-ASN',
    languages             => ['en'],
    description           => { en => 'flow-provisioner test' },
    alias_ipv6_to_ipv4    => 1,
    map_key_type_callback => sub { $types{ $_[0] } },
);
while (my $line = <STDIN>) {
    chomp $line;
    my ($network, $asn, $name) = split /,/, $line, 3;
    $tree->insert_network($network, {
        autonomous_system_number       => $asn,
        autonomous_system_organization => $name,
    });
}
open my $fh, '>:raw', $ARGV[0] or die "$ARGV[0]: $!";
$tree->write_tree($fh);
close $fh or die "$ARGV[0]: $!";
